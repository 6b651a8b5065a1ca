//! Fixtures on the real infrastructure: each test gets its own Postgres database and RabbitMQ vhost,
//! dropped when the fixture goes out of scope, so tests run in parallel without seeing each other.
//!
//! The servers come from `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`) and
//! `TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672`). Vhosts are managed with
//! `rabbitmqctl`, which must be on the PATH and allowed to talk to the broker.
//!
//! Identity providers for social login (an OpenID Connect provider, a GitHub stand-in) are node
//! child processes on loopback, one per fixture: see [`OidcProvider`] and [`GithubStandIn`].

mod oidc;
mod proxy;
mod smtp;

pub use oidc::{
    ConsentAnswer, GithubStandIn, OidcClient, OidcProvider, ProviderBrowser, ProviderVisit,
    deny_at_provider, sign_in_at_provider,
};
pub use proxy::StallingProxy;
pub use smtp::{ReceivedMail, SmtpServer};

use std::process::Command;

use anyhow::{Context, bail};
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

fn postgres_server() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn amqp_server() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

/// A database that exists for one test. The service under test creates it (it creates missing
/// databases itself); dropping the fixture drops it.
pub struct TestDatabase {
    name: String,
    url: String,
    owned: bool,
}

impl TestDatabase {
    /// A fresh, not yet created database name for `prefix` (such as "accounts").
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(&format!("test_{prefix}"));
        let url = format!("{}/{name}", postgres_server().trim_end_matches('/'));
        Self {
            name,
            url,
            owned: true,
        }
    }

    /// Another handle on `other`'s database (a second replica in a test); only the original drops it.
    pub fn shared(other: &TestDatabase) -> Self {
        Self {
            name: other.name.clone(),
            url: other.url.clone(),
            owned: false,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stages a database outage for this database only: with `false`, new connections are refused
    /// and every open one is terminated (as a restart would); `true` lets clients in again.
    pub async fn set_connectable(&self, connectable: bool) -> anyhow::Result<()> {
        let server = format!("{}/postgres", postgres_server().trim_end_matches('/'));
        let mut conn = AsyncPgConnection::establish(&server).await?;
        diesel::sql_query(format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS {connectable}",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        if !connectable {
            diesel::sql_query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind::<Text, _>(&self.name)
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }

    /// A direct connection to the test database, for assertions and arranging state.
    pub async fn connect(&self) -> anyhow::Result<AsyncPgConnection> {
        AsyncPgConnection::establish(&self.url)
            .await
            .with_context(|| format!("connecting to {}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let server = format!("{}/postgres", postgres_server().trim_end_matches('/'));
        let name = self.name.clone();
        // Drop runs outside any async context we can rely on; use a private runtime on a thread.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&server).await?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("testkit: could not drop database {}", self.name);
        }
    }
}

/// Counts rows of a single-column `count(*)` query, for assertions.
pub async fn count(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<i64> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let row: Count = diesel::sql_query(sql).get_result(conn).await?;
    Ok(row.n)
}

/// Runs a query with one text bind, for arranging state in tests.
pub async fn execute_with(
    conn: &mut AsyncPgConnection,
    sql: &str,
    value: &str,
) -> anyhow::Result<usize> {
    Ok(diesel::sql_query(sql)
        .bind::<Text, _>(value)
        .execute(conn)
        .await?)
}

/// A RabbitMQ vhost that exists for one test, with full permissions for the test user.
pub struct TestVhost {
    name: String,
    url: String,
}

impl TestVhost {
    pub fn create() -> anyhow::Result<Self> {
        let vhost = Self::planned();
        vhost.open()?;
        Ok(vhost)
    }

    /// A vhost name and URL that do not exist yet: connections to it fail, as if the broker were
    /// down, until [`Self::open`].
    pub fn planned() -> Self {
        let name = unique_name("test");
        let url = format!("{}/{name}", amqp_server().trim_end_matches('/'));
        Self { name, url }
    }

    /// Creates the vhost and grants the test user everything on it.
    pub fn open(&self) -> anyhow::Result<()> {
        rabbitmqctl(&["add_vhost", &self.name])?;
        let user = url::Url::parse(&amqp_server())?.username().to_string();
        rabbitmqctl(&["set_permissions", "-p", &self.name, &user, ".*", ".*", ".*"])
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The vhost's URL with the host and port replaced by `addr` (a proxy in front of the broker).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&self.url)?;
        url.set_ip_host(addr.ip())
            .map_err(|()| anyhow::anyhow!("cannot set the host of {}", self.url))?;
        url.set_port(Some(addr.port()))
            .map_err(|()| anyhow::anyhow!("cannot set the port of {}", self.url))?;
        Ok(url.to_string())
    }

    /// The broker's address (host and port of `TEST_AMQP_URL`), for a proxy in front of it.
    pub fn broker_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let url = url::Url::parse(&self.url)?;
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port().unwrap_or(5672);
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .context("resolving the broker's address")
    }

    /// `rabbitmqctl list_queues` on this vhost for `columns` (such as `["name", "type"]`): one line
    /// per queue, tab-separated.
    pub fn list_queues(&self, columns: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["-q", "list_queues", "-p", &self.name, "--no-table-headers"];
        args.extend_from_slice(columns);
        rabbitmqctl_output(&args)
    }

    /// Closes every client connection to this vhost, as a broker restart would.
    pub fn close_connections(&self) -> anyhow::Result<()> {
        rabbitmqctl(&[
            "close_all_connections",
            "-p",
            &self.name,
            "test: connections closed",
        ])
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name])
            && !e.to_string().contains("does not exist")
        {
            eprintln!("testkit: could not delete vhost {}: {e:#}", self.name);
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    rabbitmqctl_output(args).map(drop)
}

fn rabbitmqctl_output(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (install rabbitmq-server, or put rabbitmqctl on the PATH)")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed: {} {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An AMQP URL where nothing listens, for "broker down" tests.
pub fn unreachable_amqp_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}
