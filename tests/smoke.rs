mod common;
use common::*;
use serde_json::json;

#[test]
fn subscribe_and_receive() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    let sub = subscribe(&mut ws, json!({"subscription": "main"}));
    assert_eq!(sub["recovered"], true);
    expect_message(&mut ws, "status");
    server.push(result(
        "AAPL",
        scanstream::Scan::NewHigh,
        scanstream::EventKind::New,
    ));
    let msg = next_non_status(&mut ws);
    assert_eq!(msg["type"], "result");
    assert_eq!(msg["data"]["subscriptions"], json!(["main"]));
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
}
