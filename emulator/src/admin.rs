//! Test-only admin endpoints under `/__admin/`: counters and knobs.

use http::Method;
use serde_json::json;

use crate::reply::Reply;
use crate::router::Incoming;
use crate::state::{lock, State};

/// Serves `/__admin/*`.
pub fn handle(state: &State, req: &Incoming) -> Reply {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/__admin/counters") => {
            Reply::json(200, &serde_json::to_value(&*lock(&state.counters)).unwrap_or_default())
        }
        (&Method::POST, "/__admin/reset-counters") => {
            lock(&state.counters).clear();
            Reply::json(200, &json!({}))
        }
        (&Method::GET, "/__admin/knobs") => Reply::json(200, &serde_json::to_value(state.knobs()).unwrap_or_default()),
        (&Method::POST, "/__admin/knobs") => {
            let patch: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return Reply::json(400, &json!({"error": format!("body is not JSON: {e}")})),
            };
            let mut knobs = lock(&state.knobs);
            match knobs.merged(&patch) {
                Ok(k) => {
                    *knobs = k;
                    Reply::json(200, &serde_json::to_value(&*knobs).unwrap_or_default())
                }
                Err(e) => Reply::json(400, &json!({"error": e})),
            }
        }
        _ => Reply::text(404, "unknown admin endpoint"),
    }
}
