//! A real PostgreSQL server for a test: the library's own
//! (`metrocloud::bench::postgres`), in a temporary folder on a free port,
//! stopped and removed when dropped.

use std::ops::Deref;

use metrocloud::bench::postgres::LocalPostgres;

pub struct TestPostgres {
    // Declared first: the server stops before its folder goes.
    server: LocalPostgres,
    _dir: tempfile::TempDir,
}

impl TestPostgres {
    pub fn start() -> TestPostgres {
        let dir = tempfile::tempdir().expect("temporary folder");
        let server = LocalPostgres::start(&dir.path().join("pg")).expect("PostgreSQL starts");
        TestPostgres { server, _dir: dir }
    }

    pub fn halt(&self) {
        self.server.halt().expect("PostgreSQL stops");
    }

    pub fn resume(&self) {
        self.server.resume().expect("PostgreSQL starts again");
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.server.client().await.expect("connects")
    }
}

impl Deref for TestPostgres {
    type Target = LocalPostgres;

    fn deref(&self) -> &LocalPostgres {
        &self.server
    }
}
