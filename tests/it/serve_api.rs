//! The rest of the API surface clients read (issue 13): `GET /`, one model
//! by id, real digests and dates in `/api/tags` and `/api/ps`, and new
//! names through `/api/copy` and `/api/create` (a GGUF path on the
//! server's machine, on a loopback server only).

use serde_json::{json, Value};

use crate::common::server::{Server, MODEL};
use crate::common::smollm2;

/// The test model's sha256 (design.md).
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn tags(server: &Server) -> Vec<Value> {
    let reply = server.get("/api/tags");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["models"].as_array().expect("models").clone()
}

fn entry<'a>(models: &'a [Value], name: &str) -> &'a Value {
    models
        .iter()
        .find(|model| model["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {models:?}"))
}

#[test]
fn root_models_tags_and_ps_say_what_clients_read() {
    let server = Server::start(&[]);
    let root = server.get("/");
    assert_eq!((root.status, root.body.as_str()), (200, "olm is running"));

    let one = server.get(&format!("/v1/models/{MODEL}"));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["id"], MODEL);
    let missing = server.get("/v1/models/no-such-model");
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.json()["error"]["message"].is_string());

    let models = tags(&server);
    let listed = entry(&models, MODEL);
    assert_eq!(listed["digest"], format!("sha256:{SMOLLM2_SHA256}"));
    let modified = listed["modified_at"].as_str().expect("a date").to_owned();
    assert!(!modified.starts_with("1970"), "{listed}");

    server.warm_up();
    let ps = server.get("/api/ps");
    assert_eq!(ps.status, 200, "{}", ps.body);
    let loaded = ps.json()["models"][0].clone();
    assert_eq!(loaded["name"], MODEL, "{loaded}");
    assert_eq!(loaded["modified_at"], modified.as_str(), "{loaded}");
    assert_eq!(loaded["digest"], format!("sha256:{SMOLLM2_SHA256}"));
    // This machine has no GPU: nothing in video memory.
    assert_eq!(loaded["size_vram"], 0, "{loaded}");
    assert!(loaded["size"].as_u64() > Some(0), "{loaded}");
    assert!(
        loaded["expires_at"]
            .as_str()
            .is_some_and(|at| at > modified.as_str()),
        "{loaded}"
    );
}

#[test]
fn copy_and_create_give_new_names() {
    let server = Server::start(&[]);
    let path = smollm2();
    let created = server.post(
        "/api/create",
        &json!({"model": "created", "from": path.to_str().expect("utf-8"), "stream": false}),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.json()["status"], "success");
    let from_modelfile = server.post(
        "/api/create",
        &json!({"model": "from-modelfile", "modelfile": format!("FROM {}\n", path.display())}),
    );
    assert_eq!(from_modelfile.status, 200, "{}", from_modelfile.body);
    assert!(
        from_modelfile.body.contains("\"success\""),
        "{}",
        from_modelfile.body
    );

    let copied = server.post(
        "/api/copy",
        &json!({"source": "created", "destination": "copied"}),
    );
    assert_eq!(copied.status, 200, "{}", copied.body);
    let from_command_line = server.post(
        "/api/copy",
        &json!({"source": MODEL, "destination": "imported"}),
    );
    assert_eq!(from_command_line.status, 200, "{}", from_command_line.body);

    let models = tags(&server);
    for name in ["created", "from-modelfile", "copied", "imported"] {
        assert_eq!(
            entry(&models, name)["digest"],
            format!("sha256:{SMOLLM2_SHA256}"),
            "{name}"
        );
    }
    let answer = server.post(
        "/api/generate",
        &json!({"model": "copied", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let deleted = server.request(
        "DELETE",
        "/api/delete",
        &[],
        &json!({"model": "copied"}).to_string(),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let models = tags(&server);
    assert!(models.iter().all(|model| model["name"] != "copied"));
    entry(&models, "created");

    for (path, body, status) in [
        (
            "/api/create",
            json!({"model": "x", "from": "relative/model.gguf"}),
            404,
        ),
        (
            "/api/create",
            json!({"model": "x", "from": "/etc/passwd"}),
            400,
        ),
        (
            "/api/create",
            json!({"model": "x", "from": "/no/such/model.gguf"}),
            404,
        ),
        (
            "/api/create",
            json!({"model": "../x", "from": path.to_str().expect("utf-8")}),
            400,
        ),
        (
            "/api/create",
            json!({"model": "x", "modelfile": "FROM /a.gguf\nSYSTEM hi"}),
            400,
        ),
        (
            "/api/create",
            json!({"model": "x", "from": MODEL, "quantize": "q4_0"}),
            400,
        ),
        (
            "/api/copy",
            json!({"source": MODEL, "destination": "/tmp/evil"}),
            400,
        ),
        (
            "/api/copy",
            json!({"source": "no-such-model", "destination": "y"}),
            404,
        ),
    ] {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{}", reply.body);
    }
}
