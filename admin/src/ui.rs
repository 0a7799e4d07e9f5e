//! The Client Registry View: the admin web UI, embedded in the binary and
//! served by [`AdminService`](crate::AdminService) on `--admin-listen`.
//!
//! Every asset is compiled in with `include_str!`/`include_bytes!` from
//! `admin/ui/`, so `cargo build` alone produces the UI and nothing is read
//! from disk at run time (it works on an air-gapped plant network). The page
//! is plain HTML, CSS and ES modules: there is no JavaScript toolchain.
//!
//! # Routes
//! - `GET /` and `GET /ui`: `308` to `/ui/`.
//! - `GET /ui/`: the page, `Cache-Control: no-cache` (it names the current
//!   asset version, so it must be revalidated).
//! - `GET /ui/assets/<version>/<name>`: an asset, cached for a year and
//!   `immutable`. `<version>` is [`ASSET_VERSION`], a hash of every asset's
//!   bytes computed at compile time, so a new build gets new URLs and a
//!   browser never mixes old and new files. Another version, or an unknown
//!   name, is 404.
//!
//! Every UI response carries [`CONTENT_SECURITY_POLICY`] (no inline script
//! or style, nothing from another origin, no framing, and Trusted Types so
//! that an HTML string can never reach `innerHTML`), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! These routes need no token: the page holds no data until the admin logs
//! in, and the API calls it makes carry the token (`Authorization: Bearer`,
//! kept in `sessionStorage`, never a cookie).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

/// The policy on every UI response. `script-src 'self'` and
/// `style-src 'self'` forbid inline code; `require-trusted-types-for` makes
/// the browser refuse any string assigned to an HTML sink (`innerHTML`,
/// `insertAdjacentHTML`, …), so device-supplied text can only go in through
/// `textContent`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// `Cache-Control` of a versioned asset.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/ui/assets/<version>/`.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("status.js", JS),
    asset!("requests.js", JS),
    asset!("grant-dialog.js", JS),
    asset!("permissions.js", JS),
    asset!("users.js", JS),
    asset!("roles.js", JS),
    asset!("rules.js", JS),
    asset!("audit.js", JS),
];

/// The page, with `{{ASSETS}}` standing for `/ui/assets/<version>`.
const INDEX_TEMPLATE: &str = include_str!("../ui/index.html");

/// FNV-1a over `bytes`, continuing from `hash`; const so that the version
/// is fixed at compile time.
const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn version_hash() -> u64 {
    let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, INDEX_TEMPLATE.as_bytes());
    let mut i = 0;
    while i < ASSETS.len() {
        hash = fnv1a(hash, ASSETS[i].name.as_bytes());
        hash = fnv1a(hash, ASSETS[i].bytes);
        i += 1;
    }
    hash
}

/// The asset version in URLs: 16 hex digits of a hash of every asset.
pub const ASSET_VERSION: u64 = version_hash();

fn version() -> String {
    format!("{ASSET_VERSION:016x}")
}

/// Whether `path` is one of the UI's (and so answered by [`respond`]).
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// The answer to a request for a UI path (see [`is_ui_path`]).
pub fn respond(method: &Method, path: &str) -> Response<Bytes> {
    let mut response = if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        route(path)
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if method == Method::HEAD {
        // hyper sends no body for HEAD; an in-process caller gets none either.
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Bytes::new());
    }
    response
}

fn route(path: &str) -> Response<Bytes> {
    match path {
        "/" | "/ui" => {
            let mut r = text(StatusCode::PERMANENT_REDIRECT, "see /ui/\n");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
            r
        }
        "/ui/" | "/ui/index.html" => {
            let page = INDEX_TEMPLATE.replace("{{ASSETS}}", &format!("/ui/assets/{}", version()));
            let mut r = Response::new(Bytes::from(page));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        _ => {
            let asset = path
                .strip_prefix("/ui/assets/")
                .and_then(|rest| rest.split_once('/'))
                .filter(|(v, _)| *v == version())
                .and_then(|(_, name)| ASSETS.iter().find(|a| a.name == name));
            match asset {
                Some(asset) => {
                    let mut r = Response::new(Bytes::from_static(asset.bytes));
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(asset.content_type),
                    );
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
                    r
                }
                None => {
                    let mut r = text(StatusCode::NOT_FOUND, "no such page\n");
                    // A 404 must not be cached under a URL a later build fills.
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    r
                }
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(body.as_bytes()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response<Bytes> {
        respond(&Method::GET, path)
    }

    fn header(r: &Response<Bytes>, name: header::HeaderName) -> &str {
        r.headers()
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn asset_path(name: &str) -> String {
        format!("/ui/assets/{}/{name}", version())
    }

    #[test]
    fn root_and_bare_ui_redirect_to_the_page() {
        for path in ["/", "/ui"] {
            let r = get(path);
            assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
            assert_eq!(header(&r, header::LOCATION), "/ui/");
        }
    }

    #[test]
    fn the_page_names_the_current_versioned_assets_and_is_revalidated() {
        let r = get("/ui/");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
        let page = std::str::from_utf8(r.body()).unwrap();
        assert!(!page.contains("{{"), "template left unfilled");
        assert!(page.contains(&asset_path("app.js")), "{page}");
        assert!(page.contains(&asset_path("app.css")), "{page}");
        // No inline script or style: every <script> has a src, no style attr.
        assert!(!page.contains("<style"), "inline style element");
        assert!(!page.contains(" style="), "inline style attribute");
        for script in page.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: <script{tag}>");
        }
        assert!(
            !page
                .split_whitespace()
                .any(|w| w.starts_with("on") && w.contains('=')),
            "inline event handler attribute"
        );
    }

    #[test]
    fn every_response_carries_the_strict_policy_and_frame_headers() {
        for path in ["/", "/ui/", &asset_path("app.js"), "/ui/nope"] {
            let r = get(path);
            let csp = header(&r, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
            assert_eq!(header(&r, header::X_FRAME_OPTIONS), "DENY");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
    }

    #[test]
    fn assets_have_their_content_types_and_long_lived_caching() {
        let cases = [
            ("app.js", "text/javascript; charset=utf-8"),
            ("requests.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("icon.svg", "image/svg+xml"),
        ];
        for (name, content_type) in cases {
            let r = get(&asset_path(name));
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_eq!(header(&r, header::CONTENT_TYPE), content_type, "{name}");
            assert_eq!(header(&r, header::CACHE_CONTROL), IMMUTABLE, "{name}");
            assert!(!r.body().is_empty(), "{name}");
        }
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        // A module imported with `./x.js` but missing from ASSETS would be
        // a 404 only a browser would notice.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let source = std::str::from_utf8(asset.bytes).unwrap();
            for import in source.split("from './").skip(1) {
                let name = &import[..import.find('\'').unwrap()];
                assert_eq!(
                    get(&asset_path(name)).status(),
                    StatusCode::OK,
                    "{} imports {name}",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn unknown_assets_and_other_versions_are_404_and_not_cached() {
        let other = format!("/ui/assets/{:016x}/app.js", ASSET_VERSION ^ 1);
        for path in [
            asset_path("nope.js").as_str(),
            other.as_str(),
            "/ui/assets/app.js",
            "/ui/nope",
            "/ui/assets/",
            &asset_path("../index.html"),
        ] {
            let r = get(path);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-store", "{path}");
        }
    }

    #[test]
    fn other_methods_are_405_and_head_has_no_body() {
        let r = respond(&Method::POST, "/ui/");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&r, header::ALLOW), "GET, HEAD");
        let r = respond(&Method::HEAD, &asset_path("app.js"));
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.body().is_empty());
        assert_eq!(header(&r, header::CACHE_CONTROL), IMMUTABLE);
    }

    #[test]
    fn only_the_ui_paths_are_claimed() {
        assert!(is_ui_path("/"));
        assert!(is_ui_path("/ui"));
        assert!(is_ui_path("/ui/assets/x/app.js"));
        assert!(!is_ui_path("/api/users"));
        assert!(!is_ui_path("/uix"));
        assert!(!is_ui_path("/healthz"));
    }
}
