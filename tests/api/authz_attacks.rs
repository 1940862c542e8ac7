//! Attacks on identity, authorization and rate limits, each as a hostile caller made it
//! against the real Keystone and Glance (issue 10): separation of duties fooled with
//! `X-On-Behalf-Of` or a user name, a customer's domain admin taken for the broker's admin,
//! the rate limit escaped with a junk credential, junk tokens hammering Keystone, `/metrics`
//! grown without bound, other tenants' project names confirmed by validation, and
//! `auto_accept` decided by the requester alone.

use std::time::Duration;

use glance_share_broker::domain::policy::{Policy, SharedPolicy};
use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PROJ_B, TestApp, fields, problem, request_body, spawn_app_with_cloud, spawn_app_with_keystone};
use crate::openstack::{Rig, broker_cloud, broker_cloud_at, drive_until, env, worker_config};
use crate::proxy::TcpProxy;

/// A short unique suffix for names made in Keystone by one test.
fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..10].to_owned()
}

fn worker(app: &TestApp) -> Worker {
    Worker::new(app.pool.clone(), broker_cloud(), worker_config())
}

/// Files `body` with `token` (a Keystone token) and lets `worker` validate it.
async fn file_with_token(app: &TestApp, worker: &Worker, token: &str, body: &Value) -> Value {
    let response = app.post_as(token, "/v1/share-requests", body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
    let filed: Value = response.json().await.unwrap();
    app.validated(filed["id"].as_str().unwrap(), Some(worker)).await
}

/// POST `path` with the approver key acting for `user`.
async fn as_workflow_for(app: &TestApp, path: &str, user: &str) -> reqwest::Response {
    app.post(&app.approver, path, &json!({}))
        .header("x-on-behalf-of", user)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_approver_key_acting_for_the_requester_cannot_approve_her_request_by_any_spelling() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = worker(&app);
    let alice = rig.token("alice").await;
    let image = rig.private_image("obo-self-approval").await;
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "own approval"});
    let request = file_with_token(&app, &worker, &alice, &body).await;
    assert_eq!(request["validation"]["state"], "passed", "{request}");
    assert_eq!(request["requested_by_subject"], env("ALICE_USER_ID"));
    let approve = format!("/v1/share-requests/{}/approve", request["id"].as_str().unwrap());

    // alice's name, her user id and name@domain all stand for alice.
    for spelling in ["alice".to_owned(), env("ALICE_USER_ID"), "alice@Default".to_owned()] {
        let response = as_workflow_for(&app, &approve, &spelling).await;
        let body = problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            body["detail"].as_str().unwrap().contains("themselves"),
            "{spelling}: {body}"
        );
    }
    let response = as_workflow_for(&app, &approve, "bob").await;
    assert_eq!(response.status(), StatusCode::OK);
    let approved: Value = response.json().await.unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["approval"]["approvals"][0]["approver"], "workflow");
    assert_eq!(
        approved["approval"]["approvals"][0]["approver_subject"],
        env("BOB_USER_ID")
    );
}

#[tokio::test]
async fn one_person_cannot_give_both_approvals_of_a_two_approver_request() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let policy = Policy::parse(
        "policy.toml",
        "[[rules]]\nname = \"two-eyes\"\ndecision = \"require_approval\"\napprovals = 2",
    )
    .unwrap();
    let worker = Worker::new(
        app.pool.clone(),
        broker_cloud(),
        WorkerConfig {
            policy: SharedPolicy::new(policy),
            ..worker_config()
        },
    );
    let image = rig.private_image("two-eyes").await;
    let filed = app
        .file_as(&app.requester, &request_body(&image, &[&env("PROJ_B_ID")]))
        .await;
    let id = filed["id"].as_str().unwrap();
    assert_eq!(app.validated(id, Some(&worker)).await["approval"]["required"], 2);
    let approve = format!("/v1/share-requests/{id}/approve");

    // dave approves with his own token...
    let dave = rig.token("dave").await;
    let response = app.post_as(&dave, &approve, &json!({})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "pending_approval");
    // ...and cannot be the second approver through a key acting for him, by name or by id.
    for spelling in ["dave".to_owned(), env("DAVE_USER_ID"), "dave@Default".to_owned()] {
        let response = as_workflow_for(&app, &approve, &spelling).await;
        problem(response, StatusCode::CONFLICT).await;
    }
    // The same key acting for someone else is a second person.
    let response = as_workflow_for(&app, &approve, "carol").await;
    assert_eq!(response.status(), StatusCode::OK);
    let approved: Value = response.json().await.unwrap();
    assert_eq!(approved["status"], "approved");
    let subjects: Vec<&str> = approved["approval"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approver_subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, [env("DAVE_USER_ID"), env("CAROL_USER_ID")]);
}

#[tokio::test]
async fn on_behalf_of_no_user_or_a_name_several_domains_share_is_refused_naming_the_header() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let twin = format!("twin-{}", unique());
    let elsewhere = rig.create_domain(&format!("twins-{}", unique())).await;
    let in_default = rig.create_user(&twin, "default", "twin-secret").await;
    rig.create_user(&twin, &elsewhere, "twin-secret").await;

    let file_for = async |user: &str| {
        let image = Uuid::new_v4().to_string();
        app.post(&app.requester, "/v1/share-requests", &request_body(&image, &[PROJ_B]))
            .header("x-on-behalf-of", user)
            .send()
            .await
            .unwrap()
    };
    for (user, why) in [
        (format!("nobody-{}", unique()), "names no Keystone user"),
        (twin.clone(), "names 2 Keystone users"),
        (format!("{twin}@no-such-domain-{}", unique()), "names no Keystone user"),
    ] {
        let body = problem(file_for(&user).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&body), ["X-On-Behalf-Of"], "{user}");
        assert!(
            body["errors"][0]["reason"].as_str().unwrap().contains(why),
            "{user}: {body}"
        );
    }
    assert_eq!(app.request_count().await, 0);

    // name@domain (by name or id) and the user id pick one of the twins.
    for user in [format!("{twin}@Default"), format!("{twin}@default"), in_default.clone()] {
        let response = file_for(&user).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{user}");
        let filed: Value = response.json().await.unwrap();
        assert_eq!(filed["requested_by_subject"], in_default.as_str());
        assert_eq!(filed["on_behalf_of"], user.as_str());
        let cancel = format!("/v1/share-requests/{}/cancel", filed["id"].as_str().unwrap());
        let response = app.post(&app.requester, &cancel, &json!({})).send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test]
async fn a_keystone_user_named_like_a_key_cannot_revoke_what_the_key_filed() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = worker(&app);
    let image = rig.private_image("named-like-a-key").await;
    let request = app
        .file_and_approve(request_body(&image, &[&env("PROJ_B_ID")]), Some(&worker))
        .await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    let id = share.clone();
    drive_until(&worker, &app.pool, "the share is granted", async move |pool| {
        crate::helpers::share_state(pool, &id).await == "pending_acceptance"
    })
    .await;

    // A user called `portal` (the key's name) in a domain of its own, member of the
    // consumer project, so it sees the share.
    let domain = rig.create_domain(&format!("impostors-{}", unique())).await;
    let impostor = rig.create_user("portal", &domain, "portal-secret").await;
    rig.grant(&format!("projects/{}", env("PROJ_B_ID")), &impostor, "member")
        .await;
    let token = rig
        .token_for(&impostor, "portal-secret", json!({"project": {"id": env("PROJ_B_ID")}}))
        .await;
    let revoke = format!("/v1/shares/{share}/revoke");
    let response = app
        .post_as(&token, &revoke, &json!({"reason": "I am portal"}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(app.share_state(&share).await, "pending_acceptance");
    let response = app
        .post(&app.requester, &revoke, &json!({"reason": "the real portal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_customer_domain_admin_is_no_broker_admin_and_cannot_approve_outside_its_domain() {
    let rig = Rig::from_env();
    // The default: the cloud's admin project by name and domain, as a customer could name one.
    let app = spawn_app_with_cloud(Some(broker_cloud()), |args| {
        args.access.admin_projects = vec!["admin@Default".into()];
    })
    .await;
    let worker = worker(&app);
    let alice = rig.token("alice").await;
    let image = rig.private_image("customer-admin").await;
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "customer admin"});
    let request = file_with_token(&app, &worker, &alice, &body).await;
    let approve = format!("/v1/share-requests/{}/approve", request["id"].as_str().unwrap());

    // A new customer: a domain, a project in it named like the cloud's admin project, and
    // its admin, who also gives itself the approver role there.
    let customer = rig.create_domain(&format!("customer-{}", unique())).await;
    let project = rig.create_project_in("admin", &customer).await;
    let mallory = rig.create_user("mallory", &customer, "mallory-secret").await;
    for target in [format!("domains/{customer}"), format!("projects/{project}")] {
        for role in ["admin", "image_share_approver"] {
            rig.grant(&target, &mallory, role).await;
        }
    }
    let tokens = [
        rig.token_for(&mallory, "mallory-secret", json!({"domain": {"id": customer}}))
            .await,
        rig.token_for(&mallory, "mallory-secret", json!({"project": {"id": project}}))
            .await,
    ];
    for token in &tokens {
        let response = app
            .post_as(token, "/v1/webhooks", &json!({"url": "http://127.0.0.1:9/hook"}))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
        for path in ["/v1/audit-events", "/v1/audit-events/verify", "/v1/webhooks"] {
            let response = app.get_as(token, path).send().await.unwrap();
            problem(response, StatusCode::FORBIDDEN).await;
        }
        // alice's request is in another domain: not even visible, let alone decidable.
        let response = app.post_as(token, &approve, &json!({})).send().await.unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
        let page: Value = app
            .get_as(token, "/v1/share-requests")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"], json!([]));
    }
    let status: String = sqlx::query_scalar("select status from share_requests")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending_approval");

    // The cloud's own admin project still makes a broker admin.
    let admin = rig.token("admin").await;
    let response = app.get_as(&admin, "/v1/audit-events").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_system_scoped_admin_is_a_broker_admin_with_no_admin_project_configured() {
    let rig = Rig::from_env();
    let app = spawn_app_with_cloud(Some(broker_cloud()), |args| args.access.admin_projects = Vec::new()).await;
    let system = rig.system_token().await;
    let response = app.get_as(&system, "/v1/audit-events").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let project_admin = rig.token("admin").await;
    let response = app.get_as(&project_admin, "/v1/audit-events").send().await.unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_fresh_junk_credential_beside_a_valid_token_does_not_escape_the_rate_limit() {
    let rig = Rig::from_env();
    let app = spawn_app_with_cloud(Some(broker_cloud()), |args| {
        args.rate_limit_per_sec = 1;
        args.rate_limit_burst = 3;
    })
    .await;
    let carol = rig.token("carol").await;
    let mut ok = 0;
    for i in 0..40 {
        let response = app
            .get_as(&carol, "/v1/shares")
            .bearer_auth(format!("junk-{i}"))
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        assert!(body["detail"].as_str().unwrap().contains("one credential"), "{body}");
    }
    // The budget is carol's, however her credential is spelled.
    let mut limited = 0;
    for i in 0..10 {
        let token = format!("{carol}{}", " ".repeat(i % 3));
        let response = app.get_as(&token, "/v1/shares").send().await.unwrap();
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert!(ok <= 5 && limited >= 5, "{ok} answered, {limited} limited");
    // Another caller has a budget of its own.
    let response = app.get(&app.auditor, "/v1/shares").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn junk_from_one_address_is_limited_before_authentication() {
    let app = spawn_app_with_cloud(Some(broker_cloud()), |args| {
        args.address_rate_limit_per_sec = 1;
        args.address_rate_limit_burst = 5;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let response = app.get(&format!("junk-{i}"), "/v1/shares").send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert!(refused <= 7 && statuses[19] == 429, "{statuses:?}");
}

/// A junk token the proxy in front of Keystone looks for.
const JUNK_TOKEN: &str = "gAAAAAjunk-token-for-the-negative-cache";

#[tokio::test]
async fn an_invalid_token_reaches_keystone_once_within_the_negative_cache_time() {
    let keystone = TcpProxy::start(&env("KEYSTONE_URL")).await;
    let app = spawn_app_with_cloud(Some(broker_cloud_at(&keystone.url())), |args| {
        args.access.invalid_token_cache_secs = 60;
    })
    .await;
    let validations = |count| keystone.after_requests_matching(b"GET /v3/auth/tokens", JUNK_TOKEN.as_bytes(), count);

    let first = validations(1);
    let response = app.get_as(JUNK_TOKEN, "/v1/shares").send().await.unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first call asks Keystone")
        .unwrap();

    let mut more = validations(1);
    let calls: Vec<_> = (0..30).map(|_| app.get_as(JUNK_TOKEN, "/v1/shares").send()).collect();
    for response in futures_util::future::join_all(calls).await {
        problem(response.unwrap(), StatusCode::UNAUTHORIZED).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(more.try_recv().is_err(), "an invalid token reached Keystone again");
}

#[tokio::test]
async fn concurrent_calls_with_a_new_token_validate_it_once() {
    let keystone = TcpProxy::start(&env("KEYSTONE_URL")).await;
    let app = spawn_app_with_cloud(Some(broker_cloud_at(&keystone.url())), |_| {}).await;
    let token: &'static str = Rig::from_env().token("bob").await.leak();
    let mut second = keystone.after_requests_matching(b"GET /v3/auth/tokens", token.as_bytes(), 2);
    let calls: Vec<_> = (0..20).map(|_| app.get_as(token, "/v1/shares").send()).collect();
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(second.try_recv().is_err(), "the token was validated more than once");
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let app = crate::helpers::spawn_app().await;
    for i in 0..200 {
        let method = Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        let response = app.client.request(method, app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut methods: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    assert!(methods.contains(&"other"), "{methods:?}");
    assert!(methods.len() <= 10, "{methods:?}");
    assert!(!text.contains("JUNK"), "a caller's made-up method became a label");
}

#[tokio::test]
async fn a_target_name_in_another_tenants_domain_looks_like_a_name_that_does_not_exist() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = worker(&app);
    let alice = rig.token("alice").await;
    let tenant = rig.create_domain(&format!("tenant-{}", unique())).await;
    let hidden = format!("hidden-{}", unique());
    let hidden_id = rig.create_project_in(&hidden, &tenant).await;
    let absent = format!("absent-{}", unique());
    // A name in both alice's domain and the tenant's: alice means her own.
    let twin = format!("twin-{}", unique());
    let twin_here = rig.create_project_in(&twin, "default").await;
    rig.create_project_in(&twin, &tenant).await;

    let mut reasons = Vec::new();
    for name in [&hidden, &absent] {
        let image = rig.private_image("hidden-target").await;
        let body = json!({"image_id": image, "targets": [name], "reason": "probing"});
        let request = file_with_token(&app, &worker, &alice, &body).await;
        assert_eq!(request["validation"]["state"], "failed", "{request}");
        assert_eq!(request["shares"][0]["project_id"], Value::Null);
        assert_eq!(request["shares"][0]["project_domain"], Value::Null);
        let text = request.to_string();
        assert!(!text.contains(&hidden_id) && !text.contains(&tenant), "{text}");
        let reason = request["validation"]["errors"][0]["reason"].as_str().unwrap();
        reasons.push(reason.replace(name.as_str(), "NAME"));
    }
    assert_eq!(reasons[0], reasons[1], "a hidden project must look like an absent one");

    let image = rig.private_image("twin-target").await;
    let body = json!({"image_id": image, "targets": [twin], "reason": "my own"});
    let request = file_with_token(&app, &worker, &alice, &body).await;
    assert_eq!(request["validation"]["state"], "passed", "{request}");
    assert_eq!(request["shares"][0]["project_id"], twin_here.as_str());

    // An unrestricted key files for the whole cloud, and finds the tenant's project.
    let image = rig.private_image("cloud-wide-target").await;
    let filed = app.file_as(&app.requester, &request_body(&image, &[&hidden])).await;
    let request = app.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
    assert_eq!(request["shares"][0]["project_id"], hidden_id.as_str(), "{request}");
}

#[tokio::test]
async fn auto_accept_is_the_policys_choice_not_the_requesters() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let with = |policy: Policy| {
        Worker::new(
            app.pool.clone(),
            broker_cloud(),
            WorkerConfig {
                policy: SharedPolicy::new(policy),
                ..worker_config()
            },
        )
    };
    let file = async |worker: &Worker| {
        let image = rig.private_image("auto-accept").await;
        let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "accept for bob",
                          "auto_accept": true});
        let filed = app.file_as(&app.requester, &body).await;
        app.validated(filed["id"].as_str().unwrap(), Some(worker)).await
    };

    // The default policy: nobody accepts for the consumer; the request is denied, with why.
    let request = file(&with(Policy::default())).await;
    assert_eq!(request["status"], "denied", "{request}");
    assert_eq!(request["decided_by"], "policy");
    assert!(
        request["decision_comment"]
            .as_str()
            .unwrap()
            .contains("auto_accept is not allowed"),
        "{request}"
    );
    assert_eq!(request["shares"][0]["state"], "denied");
    assert_eq!(request["approval"]["verdict"], "auto_accept_forbidden");

    // A rule that allows it: the request waits for its approver as usual.
    let allowing = Policy::parse(
        "policy.toml",
        "[[rules]]\nname = \"ci\"\ndecision = \"require_approval\"\nauto_accept = \"allow\"",
    )
    .unwrap();
    let request = file(&with(allowing)).await;
    assert_eq!(request["status"], "pending_approval", "{request}");
    assert_eq!(request["approval"]["rule"], "ci");
    assert_eq!(request["approval"]["verdict"], "require_approval");
}

#[tokio::test]
async fn a_keys_idempotency_key_never_replays_one_users_answer_to_another() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("obo-idempotency").await;
    let body = request_body(&image, &[PROJ_B]);
    let file_for = async |user: &str| {
        app.post(&app.requester, "/v1/share-requests", &body)
            .header("x-on-behalf-of", user)
            .header("idempotency-key", "portal-form-1")
            .send()
            .await
            .unwrap()
    };

    let for_alice = file_for("alice").await;
    assert_eq!(for_alice.status(), StatusCode::CREATED);
    let for_alice: Value = for_alice.json().await.unwrap();
    // The same key and body for alice again: her own answer, replayed.
    let again = file_for("alice").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], for_alice["id"]);

    // alice withdraws hers; then bob files the same form with the portal's same key.
    let cancel = format!("/v1/share-requests/{}/cancel", for_alice["id"].as_str().unwrap());
    let response = app
        .post(&app.requester, &cancel, &json!({}))
        .header("x-on-behalf-of", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // For bob the key is bob's own: a request of his, not alice's answer replayed (which
    // would show bob alice's request and file nothing for him).
    let for_bob = file_for("bob").await;
    assert_eq!(for_bob.status(), StatusCode::CREATED);
    assert!(for_bob.headers().get("idempotent-replayed").is_none());
    let for_bob: Value = for_bob.json().await.unwrap();
    assert_ne!(for_bob["id"], for_alice["id"]);
    assert_eq!(for_bob["requested_by_subject"], env("BOB_USER_ID"));
    assert_eq!(app.request_count().await, 2);
}
