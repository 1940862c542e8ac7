//! What filing needs, against the real Keystone and Glance: a project's images
//! (`GET /v1/projects/{project_id}/images`) for its requesters only, paged, each said
//! shareable or not; and project search (`GET /v1/projects?search=`) for requesters only,
//! bounded, within the domains their target names resolve in.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, fields, problem, spawn_app_with_keystone};
use crate::openstack::{Rig, env};

fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// GET `path` as the holder of `token`.
async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.get_as(token, path).send().await.unwrap()
}

/// A new image of alice's project with no data: Glance keeps it `queued`.
async fn queued_image(rig: &Rig, name: &str) -> String {
    let response = rig
        .http
        .post(format!("{}/v2/images", rig.glance))
        .header("x-auth-token", rig.token("alice").await)
        .json(&json!({"name": name, "visibility": "private", "disk_format": "raw", "container_format": "bare"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_projects_images_are_paged_for_its_requesters_each_said_shareable_or_not() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let tag = unique();
    let active = rig.private_image(&format!("listed-{tag}")).await;
    let queued = queued_image(&rig, &format!("listed-queued-{tag}")).await;
    let alice = rig.token("alice").await;
    let path = format!("/v1/projects/{}/images", env("PROJ_A_ID"));

    // One image a page, following the cursor, until both are seen: no image twice.
    let (mut seen, mut found) = (HashSet::new(), Vec::new());
    let mut cursor: Option<String> = None;
    for _ in 0..500 {
        let page_path = match &cursor {
            Some(c) => format!("{path}?limit=1&cursor={c}"),
            None => format!("{path}?limit=1"),
        };
        let response = get(&app, &alice, &page_path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1, "{page}");
        for item in items {
            assert!(seen.insert(item["id"].as_str().unwrap().to_owned()), "twice: {item}");
            if [&active, &queued].contains(&&item["id"].as_str().unwrap().to_owned()) {
                found.push(item.clone());
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if found.len() == 2 || cursor.is_none() {
            break;
        }
    }
    assert_eq!(found.len(), 2, "both images listed: {found:?}");
    let of = |id: &str| found.iter().find(|i| i["id"] == id).unwrap().clone();
    let (a, q) = (of(&active), of(&queued));
    assert_eq!(
        (a["shareable"].clone(), a["refusals"].clone()),
        (json!(true), json!([]))
    );
    assert_eq!(
        (a["status"].as_str(), a["visibility"].as_str()),
        (Some("active"), Some("private"))
    );
    assert_eq!(q["shareable"], false);
    assert!(q["refusals"][0].as_str().unwrap().contains("queued"), "{q}");

    // Who may not: another project's members, keys that are no requester, nobody.
    for (who, token) in [("bob", rig.token("bob").await), ("carol", rig.token("carol").await)] {
        let body = problem(get(&app, &token, &path).await, StatusCode::FORBIDDEN).await;
        assert!(
            body["detail"].as_str().unwrap().contains("requester of project"),
            "{who}: {body}"
        );
    }
    for key in [&app.approver, &app.auditor] {
        problem(app.get(key, &path).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    }
    let nobody = app.client.get(app.url(&path)).send().await.unwrap();
    problem(nobody, StatusCode::UNAUTHORIZED).await;

    // Bad input, each named; a cursor naming an image Glance never had too.
    let unknown = URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
    for (bad, field) in [
        ("/v1/projects/not-a-project/images".to_owned(), "project_id"),
        (format!("{path}?limit=0"), "limit"),
        (format!("{path}?limit=201"), "limit"),
        (format!("{path}?cursor=junk"), "cursor"),
        (format!("{path}?cursor={unknown}"), "cursor"),
        (format!("{path}?owner=x"), "owner"),
    ] {
        let body = problem(get(&app, &alice, &bad).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&body), [field], "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_project_search_finds_names_within_the_callers_domains_only_a_few_at_a_time() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let tag = unique();
    let here = rig.create_project(&format!("Search-{tag}-here")).await;
    let domain = rig.create_domain(&format!("search-{tag}")).await;
    let elsewhere = rig.create_project_in(&format!("search-{tag}-elsewhere"), &domain).await;
    let alice = rig.token("alice").await;
    let search = async |token: &str, query: &str| {
        let response = get(&app, token, &format!("/v1/projects?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        response.json::<Value>().await.unwrap()
    };
    let ids = |found: &Value| -> Vec<String> {
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // alice (a member of proj-a, in Default) finds Default's project, case ignored, and not
    // the other domain's: her target names would not resolve there either.
    let found = search(&alice, &format!("search=SEARCH-{tag}")).await;
    assert_eq!(ids(&found), [here.as_str()], "{found}");
    assert_eq!(found["items"][0]["domain_id"], "default");
    assert_eq!(found["truncated"], false);
    // The cloud's admin requests for every project: both.
    let admin = rig.token("admin").await;
    let found = search(&admin, &format!("search=search-{tag}")).await;
    assert_eq!(ids(&found).len(), 2, "{found}");
    assert!(ids(&found).contains(&elsewhere));
    // Keystone's LIKE wildcards are plain characters here.
    assert_eq!(ids(&search(&alice, &format!("search=search%25{tag}")).await).len(), 0);
    assert_eq!(ids(&search(&alice, "search=proj_").await).len(), 0);
    // At most `limit`, and says when more match (proj-a to proj-d all match).
    let found = search(&alice, "search=proj-&limit=2").await;
    assert_eq!(
        (ids(&found).len(), found["truncated"].clone()),
        (2, json!(true)),
        "{found}"
    );

    // Who may not: keys that are no requester; nobody.
    for key in [&app.approver, &app.auditor] {
        let response = app.get(key, "/v1/projects?search=proj").send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    let nobody = app
        .client
        .get(app.url("/v1/projects?search=proj"))
        .send()
        .await
        .unwrap();
    problem(nobody, StatusCode::UNAUTHORIZED).await;

    // Bad input, each named: too short, too long, control characters, no search, bad limits.
    let long = "x".repeat(65);
    for (query, field) in [
        ("search=pr", "search"),
        (&*format!("search={long}"), "search"),
        ("search=pro%0Aj", "search"),
        ("", "search"),
        ("search=proj&limit=0", "limit"),
        ("search=proj&limit=21", "limit"),
        ("search=proj&limit=many", "limit"),
        ("search=proj&domain_id=default", "domain_id"),
    ] {
        let response = get(&app, &alice, &format!("/v1/projects?{query}")).await;
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&body), [field], "{query}: {body}");
    }
    rig.delete_project(&here).await;
    rig.delete_project(&elsewhere).await;
}
