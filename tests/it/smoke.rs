//! The fixture itself works: a pooler in front of the shared cluster serves real clients.

use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_serves_tokio_postgres_and_psql() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "smoke", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &format!(
            "{} = host=127.0.0.1 port={} dbname={}",
            db.name,
            pg.port(),
            db.name
        ),
        "pool_mode = transaction\ndefault_pool_size = 2\nauth_type = md5",
        &db.userlist_line(),
    )
    .await?;
    let client = pooler.connect_as(&db).await?;
    let row = client.query_one("select 1::int4 + 1", &[]).await?;
    assert_eq!(row.get::<_, i32>(0), 2);
    let out = pooler
        .psql(&db)
        .run_ok_async("select current_database()")
        .await?;
    assert_eq!(out.trim(), db.name);
    Ok(())
}
