//! A file backend whose every sync takes at least a given time: the benchmarks measure the box
//! as if its store were on an SD card (whose fsync costs milliseconds) on a machine whose disk
//! syncs in a fraction of one. A box runs with no delay, on redb's own file backend.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

#[derive(Debug)]
pub(crate) struct SlowSync {
    inner: FileBackend,
    delay: Duration,
}

impl SlowSync {
    pub(crate) fn new(file: File, delay: Duration) -> Result<SlowSync, redb::DatabaseError> {
        Ok(SlowSync {
            inner: FileBackend::new(file)?,
            delay,
        })
    }
}

impl StorageBackend for SlowSync {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let started = std::time::Instant::now();
        self.inner.sync_data()?;
        std::thread::sleep(self.delay.saturating_sub(started.elapsed()));
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
