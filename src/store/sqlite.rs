//! The embedded SQLite backend.
// TEMPORARY stub so the service compiles until the SQLite backend lands.
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct OpenError;
pub struct SqliteStore;
impl SqliteStore {
    pub fn open(_: &std::path::Path) -> Result<Self, OpenError> {
        Err(OpenError)
    }
}
impl super::Store for SqliteStore {
    async fn get(
        &self,
        _: &crate::pb::EntitlementRef,
        _: Option<i64>,
    ) -> Result<Option<super::StoredRevision>, super::StoreError> {
        unreachable!()
    }
    async fn write(&self, _: super::Write) -> Result<super::WriteOutcome, super::StoreError> {
        unreachable!()
    }
    async fn check(
        &self,
        _: super::WriteCheck,
    ) -> Result<Vec<crate::pb::PolicyViolation>, super::StoreError> {
        unreachable!()
    }
    async fn close(&self) -> Result<(), super::StoreError> {
        unreachable!()
    }
}
