//! `--postgres`: a schema of its own in the given database for the PostgreSQL figures, created
//! fresh and dropped at the end (also when the run fails).

use tokio_postgres::NoTls;

use crate::block_on;

pub struct Schema {
    url: String,
    pub name: String,
}

impl Schema {
    /// Creates a schema named after this process and `salt` in the database `url` names.
    pub fn create(url: &str, salt: u64) -> Self {
        let schema = Self {
            url: url.to_owned(),
            name: format!("provisiond_bench_{}_{salt}", std::process::id()),
        };
        let sql = format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            schema.name
        );
        if let Err(err) = schema.execute(&sql) {
            panic!("cannot create the schema in --postgres: {err}");
        }
        schema
    }

    /// The `--store` URL of provisiond (and of the seeding store): this schema first in the
    /// `search_path`.
    pub fn store_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}&application_name=provisiond-bench",
            self.url, self.name
        )
    }

    /// `server_version`, `synchronous_commit` and `fsync` of the server, for the report.
    pub fn settings(&self) -> String {
        block_on(async {
            let client = self
                .connect()
                .await
                .unwrap_or_else(|err| panic!("cannot connect to --postgres: {err}"));
            let mut values = Vec::new();
            for setting in ["server_version", "synchronous_commit", "fsync"] {
                let row = client
                    .query_one(&format!("SHOW {setting}"), &[])
                    .await
                    .unwrap_or_else(|err| panic!("SHOW {setting}: {err}"));
                values.push(row.get::<_, String>(0));
            }
            format!(
                "PostgreSQL {}, synchronous_commit={}, fsync={}",
                values[0], values[1], values[2]
            )
        })
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        block_on(async { self.connect().await?.batch_execute(sql).await })
    }
}

impl Drop for Schema {
    /// Never panics: it also runs while a failed run unwinds.
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(err) = self.execute(&sql) {
            eprintln!("warning: {sql}: {err}");
        }
    }
}
