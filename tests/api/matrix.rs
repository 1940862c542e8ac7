//! Every endpoint of the route table, called by every kind of caller: nobody, each API-key
//! role, and Keystone users in and out of the resource's projects. A route with no row here
//! fails the test, so a new endpoint cannot be forgotten.

use chrono::Utc;
use glance_share_broker::db;
use glance_share_broker::domain::{Limits, NewShareRequest, ShareRequestInput, ShareState};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with_keystone};
use crate::openstack::{Rig, env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    /// The unrestricted requester key that filed the fixtures (`portal`).
    Requester,
    Approver,
    Auditor,
    Admin,
    /// alice: member of proj-a, which owns the image.
    Alice,
    /// bob: member of proj-b, the share's consumer.
    Bob,
    /// carol: member of proj-c, which has nothing to do with it.
    Carol,
    /// dave: `image_share_approver`.
    Dave,
    /// The cloud's admin user.
    CloudAdmin,
}

const EVERYONE: [Who; 10] = [
    Who::Nobody,
    Who::Requester,
    Who::Approver,
    Who::Auditor,
    Who::Admin,
    Who::Alice,
    Who::Bob,
    Who::Carol,
    Who::Dave,
    Who::CloudAdmin,
];

/// The status `who` gets from `method path` on fixtures of proj-a shared with proj-b.
fn expected(method: &str, path: &str, who: Who) -> u16 {
    use Who::*;
    if who == Nobody && path.starts_with("/v1/") {
        return 401;
    }
    match (method, path) {
        ("get", "/healthz" | "/readyz" | "/metrics") => 200,
        ("get", "/v1/share-requests" | "/v1/shares") => 200,
        ("post", "/v1/share-requests") => match who {
            Requester | Admin | Alice | CloudAdmin => 201,
            _ => 403,
        },
        ("get", "/v1/share-requests/{id}") => match who {
            Bob | Carol => 404,
            _ => 200,
        },
        ("post", "/v1/share-requests/{id}/cancel") => match who {
            Requester | Admin | CloudAdmin => 200,
            Bob | Carol => 404,
            _ => 403,
        },
        ("post", "/v1/share-requests/{id}/approve" | "/v1/share-requests/{id}/deny") => match who {
            Approver | Admin | Dave | CloudAdmin => 200,
            _ => 403,
        },
        ("get", "/v1/shares/{id}") => match who {
            Carol => 404,
            _ => 200,
        },
        ("post", "/v1/shares/{id}/accept" | "/v1/shares/{id}/reject") => match who {
            Admin | Bob | CloudAdmin => 202,
            Carol => 404,
            _ => 403,
        },
        ("post", "/v1/shares/{id}/revoke") => match who {
            Requester | Admin | Alice | CloudAdmin => 202,
            Carol => 404,
            _ => 403,
        },
        // The fixture's share has no revoke scheduled: those who may cancel one learn that.
        ("delete", "/v1/shares/{id}/revocation") => match who {
            Requester | Admin | Alice | CloudAdmin => 409,
            Carol => 404,
            _ => 403,
        },
        // The image's project, the consumer, approvers, auditors and admins; carol's
        // project has nothing to do with the share (for the image: no share she may read).
        ("get", "/v1/shares/{id}/impact" | "/v1/images/{image_id}/dependents") => match who {
            Carol => 404,
            _ => 200,
        },
        (
            "get",
            "/v1/audit-events"
            | "/v1/audit-events/verify"
            | "/v1/audit-chain"
            | "/v1/images/{image_id}/access"
            | "/v1/images/{image_id}/access-history"
            | "/v1/projects/{project_id}/access-history"
            | "/v1/drift",
        ) => match who {
            Auditor | Admin | CloudAdmin => 200,
            _ => 403,
        },
        // Project search: requesters (each member of a project is one), admins.
        ("get", "/v1/projects") => match who {
            Requester | Admin | Alice | Bob | Carol | Dave | CloudAdmin => 200,
            _ => 403,
        },
        // A project's images: its requesters (bob for proj-b), unrestricted requesters, admins.
        ("get", "/v1/projects/{project_id}/images") => match who {
            Requester | Admin | Bob | CloudAdmin => 200,
            _ => 403,
        },
        ("post", "/v1/webhooks") => admin_only(who, 201),
        ("post", "/v1/reconcile") => admin_only(who, 202),
        ("delete", "/v1/webhooks/{id}") => admin_only(who, 204),
        ("get" | "patch", "/v1/webhooks" | "/v1/webhooks/{id}" | "/v1/webhooks/{id}/deliveries") => {
            admin_only(who, 200)
        }
        _ => panic!("{method} {path} has no row in the access matrix: add one"),
    }
}

fn admin_only(who: Who, success: u16) -> u16 {
    if matches!(who, Who::Admin | Who::CloudAdmin) {
        success
    } else {
        403
    }
}

/// A pending, validated request of proj-a's image, filed by `portal`, with one share to
/// proj-b already granted (so every action on it is possible), and a webhook. Returns
/// (request id, share id, webhook id).
pub(crate) async fn fixture(app: &TestApp) -> (Uuid, Uuid, Uuid) {
    let input = ShareRequestInput {
        image_id: Uuid::new_v4().to_string(),
        targets: vec![env("PROJ_B_ID")],
        region: None,
        reason: "matrix".into(),
        expires_at: None,
        auto_accept: false,
    };
    let limits = Limits {
        max_targets: 10,
        default_region: "RegionOne".into(),
    };
    let new = NewShareRequest::parse(input, &limits, Utc::now()).unwrap();
    let proj_a = env("PROJ_A_ID");
    let filer = db::share_requests::Filer {
        requested_by: "portal",
        subject: "key:portal",
        on_behalf_of: None,
        target_domains: None,
        image_owner: Some(&proj_a),
    };
    let mut tx = app.pool.begin().await.unwrap();
    let (request, shares) = db::share_requests::insert(&mut tx, &new, filer).await.unwrap();
    let image = db::share_requests::ImageFacts {
        name: Some("matrix".into()),
        owner: Some(proj_a.clone()),
        owner_domain: Some("default".into()),
        visibility: "private".into(),
    };
    let target = db::share_requests::ResolvedTarget {
        share_id: shares[0].id,
        project_id: env("PROJ_B_ID"),
        project_name: "proj-b".into(),
        project_domain: "default".into(),
    };
    db::share_requests::pass_validation(&mut tx, request.id, &image, &[target], &[])
        .await
        .unwrap();
    let proj_b = env("PROJ_B_ID");
    let granted = db::shares::Granted {
        id: shares[0].id,
        project_id: &proj_b,
        state: ShareState::PendingAcceptance,
        image_name: None,
        image_owner: None,
    };
    // Grants are recorded only for shares being granted (a guarded transition).
    db::shares::transition(&mut tx, shares[0].id, shares[0].state, ShareState::Granting, None)
        .await
        .unwrap()
        .unwrap();
    let share = db::shares::set_granted_all(&mut tx, &[granted])
        .await
        .unwrap()
        .remove(0);
    let hook = db::webhooks::NewWebhook {
        url: "http://127.0.0.1:9/hook",
        events: &[],
        description: None,
        created_by: "matrix",
    };
    let (webhook, _) = db::webhooks::create(&mut tx, hook).await.unwrap();
    tx.commit().await.unwrap();
    (request.id, share.id, webhook.id)
}

/// The image of the share `share_id`.
async fn shared_image(app: &TestApp, share_id: Uuid) -> String {
    let share = db::shares::find(&app.pool, share_id).await.unwrap().unwrap();
    share.image_id.to_string()
}

#[tokio::test]
async fn every_endpoint_answers_each_kind_of_caller_as_the_matrix_says() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("matrix").await;
    let tokens = [
        (Who::Alice, rig.token("alice").await),
        (Who::Bob, rig.token("bob").await),
        (Who::Carol, rig.token("carol").await),
        (Who::Dave, rig.token("dave").await),
        (Who::CloudAdmin, rig.token("admin").await),
    ];
    let spec = serde_json::to_value(glance_share_broker::http::openapi()).unwrap();
    let mut failures = Vec::new();
    let mut cells = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            for who in EVERYONE {
                let (request_id, share_id, webhook_id) = fixture(&app).await;
                let id = match path {
                    p if p.starts_with("/v1/shares") => share_id,
                    p if p.starts_with("/v1/webhooks") => webhook_id,
                    _ => request_id,
                };
                // What depends on an image is asked of the image of the fixture's share.
                let image = match path.as_str() {
                    "/v1/images/{image_id}/dependents" => shared_image(&app, share_id).await,
                    _ => image.clone(),
                };
                let path_with_ids = path
                    .replace("{id}", &id.to_string())
                    .replace("{image_id}", &image)
                    .replace("{project_id}", &env("PROJ_B_ID"));
                let query = match path.as_str() {
                    "/v1/projects" => "?search=proj",
                    _ => "",
                };
                let url = app.url(&format!("{path_with_ids}{query}"));
                let body = match path.as_str() {
                    "/v1/share-requests" => json!({
                        "image_id": image,
                        "targets": [Uuid::new_v4().simple().to_string()],
                        "reason": "matrix",
                    }),
                    p if p.ends_with("/revoke") => json!({"reason": "matrix"}),
                    "/v1/webhooks" => json!({"url": "http://127.0.0.1:9/hook"}),
                    "/v1/webhooks/{id}" => json!({"description": "matrix"}),
                    _ => json!({}),
                };
                let mut call = app
                    .client
                    .request(method.to_uppercase().parse::<Method>().unwrap(), url);
                if method != "get" {
                    call = call.json(&body);
                }
                call = match who {
                    Who::Nobody => call,
                    Who::Requester => call.bearer_auth(&app.requester),
                    Who::Approver => call.bearer_auth(&app.approver),
                    Who::Auditor => call.bearer_auth(&app.auditor),
                    Who::Admin => call.bearer_auth(&app.admin),
                    user => call.header("x-auth-token", &tokens.iter().find(|(w, _)| *w == user).unwrap().1),
                };
                let response = call.send().await.unwrap();
                let got = response.status().as_u16();
                let want = expected(method, path, who);
                cells += 1;
                if got != want {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    failures.push(format!("{method} {path} as {who:?}: {got}, expected {want} ({body})"));
                }
            }
        }
    }
    assert!(cells >= 20 * EVERYONE.len(), "the route table shrank? {cells} cells");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
