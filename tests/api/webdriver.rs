//! A small W3C WebDriver client over reqwest, enough for the console's browser tests:
//! Debian's chromedriver (scripts/lib.sh `ensure_chromium`) driving headless Chromium.
//! Input goes through the keyboard only (Tab, Enter, typed text), as a person without a
//! mouse would use the console.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// chromedriver on a free port, with one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
}

impl Browser {
    pub async fn start() -> Browser {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&chromedriver).exists(),
            "{chromedriver} is missing: scripts/test.sh installs it (ensure_chromium in scripts/lib.sh)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let mut browser = Browser {
            driver,
            http,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if let Ok(r) = browser.http.get(format!("{}/status", browser.base)).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,900", "--no-first-run", "--disable-extensions"]}}}});
        let session = browser.call("POST", "/session", capabilities).await;
        let id = session["sessionId"].as_str().expect("a WebDriver session").to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", Value::Null).await.as_str().unwrap().to_owned()
    }

    pub async fn source(&self) -> String {
        self.call("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Types `text` (which may hold WebDriver key codes such as [`TAB`]) into whatever has focus.
    pub async fn keys(&self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.call("POST", "/actions", body).await;
    }

    /// An attribute (or, for `text`, the visible text) of the focused element.
    pub async fn focused(&self, attribute: &str) -> String {
        let active = self.call("GET", "/element/active", Value::Null).await;
        let Some(element) = active[ELEMENT].as_str() else {
            return String::new();
        };
        let path = match attribute {
            "text" => format!("/element/{element}/text"),
            name => format!("/element/{element}/attribute/{name}"),
        };
        self.call("GET", &path, Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Presses Tab until the focused element's `attribute` is `value` (at most 30 times).
    pub async fn tab_to(&self, attribute: &str, value: &str) {
        for _ in 0..30 {
            self.keys(TAB).await;
            if self.focused(attribute).await == value {
                return;
            }
        }
        panic!("Tab never reached the element whose {attribute} is {value:?}");
    }

    /// Waits until the page's URL contains `part`.
    pub async fn wait_for_url(&self, part: &str) {
        for _ in 0..100 {
            if self.url().await.contains(part) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the browser never reached a URL with {part:?} (at {})",
            self.url().await
        );
    }

    /// Waits until the page's source contains `part` (a form posted back to its own URL
    /// changes no URL).
    pub async fn wait_for_text(&self, part: &str) {
        for _ in 0..100 {
            if self.source().await.contains(part) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {part:?} (at {})", self.url().await);
    }

    /// Runs `script` (a function body; a promise it returns is awaited) in the page.
    pub async fn execute(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// The serious and critical accessibility violations axe-core (the npm package
    /// `ensure_chromium` fetches, `AXE_CORE_JS`) finds in the page, once it has checked at
    /// least one rule.
    pub async fn violations(&self) -> Vec<String> {
        let path = std::env::var("AXE_CORE_JS")
            .expect("AXE_CORE_JS is not set: scripts/test.sh fetches axe-core (ensure_chromium in scripts/lib.sh)");
        let axe = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        self.execute(&format!("{axe}\nreturn true;")).await;
        let found = self
            .execute(
                "return axe.run(document).then(r => ({passes: r.passes.length, violations: r.violations\
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')\
                 .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))}));",
            )
            .await;
        assert!(
            found["passes"].as_u64().unwrap() > 0,
            "axe-core checked nothing: {found}"
        );
        serde_json::from_value(found["violations"].clone()).unwrap()
    }

    /// Fails on any serious or critical accessibility violation in the page.
    pub async fn assert_accessible(&self, page: &str) {
        let found = self.violations().await;
        assert!(found.is_empty(), "{page}: axe-core finds {found:#?}");
    }

    /// Saves a PNG of the page as docs/screenshots/<name>.png.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    pub async fn quit(mut self) {
        self.call("DELETE", "", Value::Null).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
