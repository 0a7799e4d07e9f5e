//! The OpenAPI document through the real binary: served on the admin port
//! and on the device port (forwarded), without a token, identical on both;
//! and the device port's own routes answer the methods the document lists
//! and 405 for the rest, as the contract (and schemathesis) expect.

use fleetgate_tests::*;

#[test]
fn openapi_json_is_served_on_both_ports_without_a_token() {
    let g = Gateway::start(&["--https-listen", "off", "--mqtts-listen", "off"]);
    let admin = request(g.admin, "GET", "/api/openapi.json", &[], b"");
    assert_eq!(admin.status, 200);
    assert_eq!(admin.header("Content-Type"), Some("application/json"));
    let doc = admin.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/client-registry/register"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["apiToken"].is_object());
    let device = request(g.http, "GET", "/api/openapi.json", &[], b"");
    assert_eq!(device.status, 200);
    assert_eq!(device.json(), doc, "the same document on the device port");
    // Other admin paths stay hidden on the device port.
    assert_eq!(request(g.http, "GET", "/api/users", &[], b"").status, 404);
}

/// Regression (schemathesis, ST204): the proxy answered any method on its
/// health checks with 200; the document lists GET only.
#[test]
fn device_port_health_checks_refuse_other_methods() {
    let g = Gateway::start(&["--https-listen", "off", "--mqtts-listen", "off"]);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(request(g.http, "GET", path, &[], b"").status, 200, "{path}");
        for method in ["TRACE", "POST", "DELETE"] {
            let r = request(g.http, method, path, &[], b"");
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("Allow"), Some("GET"), "{method} {path}");
        }
    }
}
