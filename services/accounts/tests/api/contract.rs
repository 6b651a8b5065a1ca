//! The OpenAPI document and the handlers agree: what the document refuses, the handlers refuse
//! (400 in the envelope), and what they enforce, the document states. scripts/schemathesis.sh
//! checks the same property-based over every operation; these pin the cases it found.

use accounts::domain::profile::max_len;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, errors, registration, spawn_app, superuser, unique_email};

/// A control-character-free string, in the JSON Schema dialect both ECMA-262 and Python read.
const NO_CONTROL: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

#[tokio::test]
async fn a_method_a_path_does_not_answer_gets_405_with_an_allow_header() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::DELETE, "/api/users", "POST"),
        (Method::GET, "/api/users/login", "POST"),
        (Method::PATCH, "/api/user", "GET, PUT"),
        (Method::POST, "/api/admin/users/x/roles", "PUT"),
        (Method::HEAD, "/healthz", "GET"),
        (Method::POST, "/openapi.json", "GET"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(
            response.headers()["allow"].to_str().unwrap(),
            allow,
            "{method} {path}"
        );
        if method != Method::HEAD {
            assert_eq!(
                errors(response).await["method"][0],
                "Method not allowed.",
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn request_bodies_refuse_unknown_properties_so_a_typo_is_never_ignored() {
    let app = spawn_app().await;
    let mut misspelt = registration(&unique_email(), PASSWORD);
    misspelt["user"]["pasword"] = json!(PASSWORD);
    let mut outer = registration(&unique_email(), PASSWORD);
    outer["extra"] = json!(1);
    for (path, body) in [
        ("/api/users", misspelt),
        ("/api/users", outer),
        (
            "/api/users/login",
            json!({"user": {"email": "a@example.com", "password": PASSWORD, "remember": true}}),
        ),
        (
            "/api/users/token/refresh",
            json!({"refresh_token": "x", "token": "y"}),
        ),
        (
            "/api/users/password/forgot",
            json!({"user": {"email": "a@example.com"}, "errors": {}}),
        ),
        (
            "/api/users/password/reset",
            json!({"token": "x", "password": PASSWORD, "new_password": PASSWORD}),
        ),
        ("/api/users/email/revert", json!({"token": "x", "id": 1})),
    ] {
        let response = app.post(path, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        let errors = errors(response).await;
        assert!(
            errors["body"][0]
                .as_str()
                .unwrap()
                .starts_with("Unknown property `"),
            "{path}: {errors}"
        );
    }

    // A profile update with a misspelt password field changes nothing, rather than "succeeding".
    let (_, registered) = app.register_user().await;
    let token = registered["user"]["token"].as_str().unwrap();
    let response = app
        .update_user(token, json!({"pasword": "another-Pass-42"}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(response).await["body"][0],
        "Unknown property `pasword`."
    );
}

#[tokio::test]
async fn logout_takes_no_body_an_empty_object_or_null() {
    let app = spawn_app().await;
    for body in ["", "null", "{}"] {
        let (_, registered) = app.register_user().await;
        let token = registered["user"]["token"].as_str().unwrap();
        let response = app
            .client
            .post(app.url("/api/users/logout"))
            .header("Authorization", format!("Token {token}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{body:?}");
        assert_eq!(
            app.current_user(token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn admin_filters_with_a_nul_or_control_character_are_a_400_never_a_500() {
    let app = spawn_app().await;
    let (_, token) = superuser(&app).await;
    for (path, field) in [
        ("/api/admin/users?role=adm%00in", "role"),
        ("/api/admin/users?search=ada%00", "search"),
        ("/api/admin/users?search=%1B%5B31m", "search"),
        ("/api/admin/audit?action=login%00", "action"),
        ("/api/admin/users?role=", "role"),
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("Authorization", format!("Token {token}"))
            .send()
            .await
            .unwrap();
        if path.ends_with("role=") {
            // An empty role is a role no one holds: an empty page, not an error.
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            continue;
        }
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(errors(response).await[field][0].is_string(), "{path}");
    }
    let long = "r".repeat(65);
    let response = app
        .client
        .get(app.url(&format!("/api/admin/users?role={long}")))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn lengths_count_what_the_document_counts_padding_included() {
    let app = spawn_app().await;
    let (_, registered) = app.register_user().await;
    let token = registered["user"]["token"].as_str().unwrap();
    let max = max_len("first_name");
    let at_limit = "é".repeat(max);
    let response = app
        .update_user(token, json!({ "first_name": at_limit }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // One over the documented maxLength, even if it is only whitespace the handler would trim.
    let padded = format!("{} ", "a".repeat(max));
    let response = app
        .update_user(token, json!({ "first_name": padded }))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(errors(response).await["first_name"][0].is_string());
    // A locale is a bare tag, as the pattern says.
    let response = app.update_user(token, json!({ "locale": " fr" })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_document_states_the_limits_the_handlers_enforce() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;

    // Every request body refuses unknown properties, and so does every envelope.
    for name in [
        "Registration",
        "Credentials",
        "ProfileUpdate",
        "EmailOnly",
        "RefreshRequest",
        "LogoutRequest",
        "ResetRequest",
        "TokenRequest",
        "RolesRequest",
        "UserEnvelope_Registration",
        "UserEnvelope_Credentials",
        "UserEnvelope_ProfileUpdate",
        "UserEnvelope_EmailOnly",
    ] {
        assert_eq!(
            schema(&doc, name)["additionalProperties"],
            json!(false),
            "{name}"
        );
    }

    let envelope = schema(&doc, "UserEnvelope_Registration");
    assert_eq!(envelope["required"], json!(["user"]));
    assert_eq!(
        envelope["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["user"]
    );

    let registration = &schema(&doc, "Registration")["properties"];
    let update = &schema(&doc, "ProfileUpdate")["properties"];
    for properties in [registration, update] {
        for field in [
            "username",
            "first_name",
            "last_name",
            "phone_number",
            "address",
        ] {
            assert_eq!(
                properties[field]["maxLength"],
                json!(max_len(field)),
                "{field}"
            );
        }
        for field in ["first_name", "last_name", "phone_number", "address"] {
            assert_eq!(properties[field]["pattern"], NO_CONTROL, "{field}");
        }
        assert_eq!(properties["username"]["pattern"], r"^\s*[\w.@+-]*\s*$");
        assert_eq!(properties["email"]["format"], "email");
        assert_eq!(properties["email"]["maxLength"], 254);
        assert_eq!(properties["password"]["minLength"], 8);
        assert_eq!(properties["password"]["maxLength"], 71);
        assert_eq!(
            properties["locale"]["pattern"],
            "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$"
        );
    }
    assert_eq!(update["bio"]["maxLength"], json!(max_len("bio")));
    let user = &schema(&doc, "UserBody")["properties"];
    assert_eq!(user["email"]["format"], "email");
    assert_eq!(user["id"]["format"], "uuid");
    assert_eq!(user["created_at"]["format"], "date-time");
    assert_eq!(update["image"]["maxLength"], json!(max_len("image")));
    assert_eq!(
        schema(&doc, "Registration")["required"],
        json!(["email", "password"])
    );

    let parameters = |path: &str, method: &str| -> Vec<Value> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let parameter = |path: &str, method: &str, name: &str| -> Value {
        parameters(path, method)
            .into_iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
    };
    let limit = parameter("/api/admin/users", "get", "limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(200))
    );
    assert_eq!(
        parameter("/api/admin/users", "get", "cursor")["schema"]["format"],
        "uuid"
    );
    assert_eq!(
        parameter("/api/admin/users", "get", "verified")["schema"]["type"],
        "boolean"
    );
    assert_eq!(
        parameter("/api/admin/users/{id}", "get", "id")["schema"]["format"],
        "uuid"
    );

    // Every operation documents the 413 of the body limit; every API operation the 503 of a lost
    // database; every authenticated one 401 and 403; every one with a body or query, 400.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            assert!(has("413"), "{method} {path}");
            if path.starts_with("/api/") {
                assert!(has("503"), "{method} {path}");
            }
            if operation.get("security").is_some() {
                assert!(has("401") && has("403"), "{method} {path}");
            }
            let has_query = parameters(path, method).iter().any(|p| p["in"] == "query");
            if operation.get("requestBody").is_some() || has_query {
                assert!(has("400"), "{method} {path}");
            }
            if has("429") {
                assert_eq!(
                    responses["429"]["headers"]["Retry-After"]["schema"]["type"], "integer",
                    "{method} {path}"
                );
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let body = &response["content"]["application/json"]["schema"];
                    assert_eq!(
                        body["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
