//! The generated OpenAPI document: every route of the table once, nothing else, every
//! reference resolving, every request body closed.

use serde_json::Value;
use tollgate_admin_api::ROUTES;
use tollgate_admin_api::openapi::document;

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|x| refs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn document_lists_the_route_table_and_nothing_else() {
    // Goal: the paths and methods of the generated document are exactly the table's, each operation carries the table's roles, and no two routes share a method and path.
    let doc = document();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
            let route =
                ROUTES.iter().find(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)).unwrap();
            let roles: Vec<&str> = route.roles.iter().map(|r| r.as_str()).collect();
            assert_eq!(op["x-roles"], serde_json::json!(roles), "{method} {path}");
            assert_eq!(op["operationId"], format!("{:?}", route.operation));
        }
    }
    let mut table: Vec<(String, String)> =
        ROUTES.iter().map(|r| (r.method.as_str().to_owned(), r.path.to_owned())).collect();
    documented.sort();
    table.sort();
    let before = table.len();
    table.dedup();
    assert_eq!(table.len(), before, "a method and path twice in the table");
    assert_eq!(documented, table);
}

#[test]
fn every_reference_resolves_and_request_bodies_are_closed() {
    // Goal: each $ref in the document names a component that exists, and each request body schema refuses unknown fields like the gateway does.
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 100, "{} references", all.len());
    for r in all {
        let pointer = r.trim_start_matches('#');
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for route in ROUTES {
        if let Some(body) = route.body {
            let schema = &doc["components"]["schemas"][body()];
            assert_eq!(
                schema["additionalProperties"],
                false,
                "{} {}: body not closed",
                route.method.as_str(),
                route.path
            );
        }
    }
}
