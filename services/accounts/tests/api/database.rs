//! The database dropping every connection under a busy service (a restart, a failover, an
//! operator's `pg_terminate_backend`): a request authenticated right afterwards is answered, though
//! the pool does not test a recently used connection before handing it out.

use futures_util::future::join_all;
use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn requests_after_the_database_dropped_every_connection_are_answered() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    for trial in 0..5 {
        // Many pooled connections, all used within the last moment.
        let warm = join_all((0..16).map(|_| app.current_user(&token))).await;
        assert!(warm.iter().all(|r| r.status() == StatusCode::OK));
        app.db.set_connectable(false).await.unwrap();
        app.db.set_connectable(true).await.unwrap();
        // At once: some pooled connections are closed on the server's side and not yet noticed.
        let answers = join_all((0..16).map(|_| app.current_user(&token))).await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert!(
            statuses.iter().all(|&s| s == 200),
            "trial {trial}: {statuses:?}"
        );
    }
}
