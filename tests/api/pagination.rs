use std::collections::HashSet;

use serde_json::Value;

use crate::helpers::{IMAGE, spawn_app};

#[tokio::test]
async fn paging_while_others_insert_skips_and_repeats_nothing() {
    let app = spawn_app().await;
    let mut before = HashSet::new();
    for i in 0..45 {
        let filed = app.file(IMAGE, &[&format!("{i:032x}")]).await;
        before.insert(filed["id"].as_str().unwrap().to_owned());
    }

    // A writer keeps filing requests while a reader walks the pages.
    let writer = {
        let (client, url, key) = (app.client.clone(), app.url("/v1/share-requests"), app.requester.clone());
        tokio::spawn(async move {
            for i in 0..30 {
                let body = crate::helpers::request_body(IMAGE, &[&format!("{:032x}", 1000 + i)]);
                let response = client.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
                assert_eq!(response.status(), reqwest::StatusCode::CREATED);
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/share-requests?limit=7&cursor={c}"),
            None => "/v1/share-requests?limit=7".to_owned(),
        };
        let page: Value = app.read(&path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no request appears twice");
    assert!(
        before.iter().all(|id| unique.contains(id)),
        "every request that existed before paging began is seen"
    );
    assert!(pages >= 7);

    // Newest first, and a full walk after the writer is done sees everything.
    let all: Value = app.read("/v1/share-requests?limit=200").await;
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 75);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "ordered newest first");
    assert!(all["next_cursor"].is_null());
}
