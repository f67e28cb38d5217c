//! The SQLite engine: one writer thread that groups jobs into batched commits (each job in
//! its own savepoint, so one failing job never takes its neighbours down), and a bounded
//! pool of read connections used from the blocking thread pool.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::StoreError;

use super::schema;

/// Jobs waiting for the writer; senders wait (backpressure) when it is full.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Jobs committed together at most.
pub const WRITE_BATCH_MAX: usize = 512;
/// Page cache of the writer connection while it commits batches, KiB. SQLite walks the
/// writer's whole page cache at the end of every write transaction (`pcache1TruncateUnsafe`),
/// so each commit costs in proportion to it: at 16 MiB that was 2–4% of the request
/// pipeline's CPU, and 12% of a bare loop of 40-row commits (0.3% at 1 MiB; BENCHMARKS.md).
/// Batches touch the ends of a few tables and indexes, which fit in this.
const WRITER_CACHE_KIB: i64 = 4 * 1024;
/// ... and while it runs bulk jobs alone (fleet generation, registry import), which touch
/// index pages all over the tree and commit rarely.
const BULK_CACHE_KIB: i64 = 16 * 1024;
const _: () = assert!(BULK_CACHE_KIB > WRITER_CACHE_KIB, "bulk jobs get the larger cache");
/// Size the WAL file is truncated to after a checkpoint, bytes.
const WAL_BYTES_KEPT_MAX: i64 = 64 << 20;
/// How often the background checkpointer folds the WAL into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages after which the writer checkpoints itself: a safety net for when the
/// background checkpointer cannot keep up (it normally keeps the WAL far below this).
const WRITER_CHECKPOINT_PAGES: i64 = 50_000;
/// Time a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// WAL with synchronous=NORMAL: survives process crashes, may lose the last commits on
    /// power loss. For simulations and benchmarks.
    Normal,
}

/// Options for opening the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// Read connections (and so concurrent reads).
    pub readers: usize,
    /// Metering points whose planning facts (registrations, enrolments, linked meter) are
    /// kept in memory at most, about 220 bytes each when full (see `BENCHMARKS.md`). Beyond
    /// it the least recently used are read again when needed.
    pub planning_entries: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            readers: 4,
            planning_entries: super::facts::PLANNING_ENTRIES_DEFAULT,
        }
    }
}

pub(crate) struct Pending {
    ok: bool,
    reply: Reply,
}

/// A write: given the connection it runs and returns its pending reply; given an error
/// (the transaction could not start) it tells its caller at once and runs nothing.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Option<Pending> + Send>;

/// What undoes a batched job that fails.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Its own savepoint: only it is undone.
    Savepoint,
    /// The batch's transaction: the whole batch is rolled back and every job in it refused.
    /// For jobs that check before they write, whose only failures are the database's own
    /// (I/O, a full disk): they skip a savepoint's cost, which is copying every page they
    /// touch to the statement journal.
    Batch,
}

enum Msg {
    /// Run in the next batch: inside its own savepoint (`Guard::Savepoint`), or bare
    /// (`Guard::Batch`: its failure refuses the whole batch).
    Run(Job, Guard),
    /// Run alone in its own transaction (bulk work: a savepoint would journal every page
    /// it touches a second time).
    Solo(Job),
    /// Commit what came before and stop.
    Stop,
}

/// What a watched table's change was: the rows' keys (a key column's name and its text,
/// before and after), or everything (too many rows to name, or a commit by someone else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    Keys(Vec<(&'static str, String)>),
    All,
}

/// Told of every change to the watched tables: a cache of what they say.
pub(crate) trait Invalidate: Send + Sync {
    /// Drop what `changed` names. Called twice for each commit of this process's writer
    /// (just before it and just after it, before any writer hears its write is done), and
    /// with [`Changed::All`] when someone else committed.
    fn invalidate(&self, changed: &Changed);
}

/// Distinct rows changed in one transaction that are named one by one at most: room for a
/// full batch of completions that each touch a premises' devices. A bulk job changes more,
/// and is [`Changed::All`].
const CHANGED_ROWS_MAX: usize = 8 * WRITE_BATCH_MAX;

#[derive(Default)]
struct Collected {
    /// (index into the watched tables, rowid).
    rows: std::collections::HashSet<(usize, i64)>,
    all: bool,
}

/// Tells a cache of the watched tables what changed, per key. The writer notes the rowid
/// of every row it inserts, updates or deletes in them (SQLite's update hook), and just
/// before the commit reads their key columns (the new values) and what temporary triggers
/// kept of the old ones (updates of a key column, deletes). The cache is told then and
/// again just after the commit. Commits by anyone else (another meterhub process on the
/// same data directory, the sqlite3 shell) are seen by the writer connection's
/// `PRAGMA data_version`, which moves only for other connections' commits: checked at the
/// start of every transaction, and every [`CHECKPOINT_INTERVAL`] while idle. They drop
/// everything.
pub(crate) struct Changes {
    watch: Option<(&'static schema::Watch, Arc<dyn Invalidate>)>,
    collected: Arc<Mutex<Collected>>,
    /// The writer connection's `data_version` when last read (`None`: not yet, or unreadable).
    /// (Only the writer thread, which owns this, reads and sets it.)
    data_version: std::cell::Cell<Option<i64>>,
}

/// Where the temporary triggers keep the old keys of updated and deleted rows.
const OLD_KEYS: &str = "temp.meterhub_changed_keys";

impl Changes {
    fn new(watch: Option<(&'static schema::Watch, Arc<dyn Invalidate>)>) -> Changes {
        Changes { watch, collected: Arc::default(), data_version: std::cell::Cell::new(None) }
    }

    /// Have the writer note the rows it changes in the watched tables, and keep the old
    /// keys of the rows it updates or deletes.
    fn hook(&self, writer: &mut Connection) -> Result<(), StoreError> {
        let Some((watch, _)) = &self.watch else { return Ok(()) };
        let watch: &'static schema::Watch = watch;
        let mut sql = format!("CREATE TEMP TABLE IF NOT EXISTS {OLD_KEYS} (col TEXT NOT NULL, key TEXT);");
        for (table, keys) in watch.tables {
            let old: Vec<String> = keys.iter().map(|k| format!("('{k}', old.{k})")).collect();
            let old = old.join(", ");
            let of = keys.join(", ");
            sql.push_str(&format!(
                "CREATE TEMP TRIGGER IF NOT EXISTS meterhub_{table}_updated AFTER UPDATE OF {of} ON main.{table} \
                 BEGIN INSERT INTO {OLD_KEYS} (col, key) VALUES {old}; END; \
                 CREATE TEMP TRIGGER IF NOT EXISTS meterhub_{table}_deleted AFTER DELETE ON main.{table} \
                 BEGIN INSERT INTO {OLD_KEYS} (col, key) VALUES {old}; END;"
            ));
        }
        writer.execute_batch(&sql).map_err(backend)?;
        // The update hook sees rowid tables only.
        for (table, _) in watch.tables {
            let rowid: bool = writer
                .query_row("SELECT NOT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1", [table], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            if !rowid {
                return Err(StoreError::Backend(format!("watched table {table} must be a rowid table")));
            }
        }
        let collected = self.collected.clone();
        writer
            .update_hook(Some(move |_: rusqlite::hooks::Action, db: &str, table: &str, rowid: i64| {
                if db != "main" {
                    return;
                }
                let Some(t) = watch.tables.iter().position(|(name, _)| *name == table) else { return };
                let mut c = collected.lock().expect("changed rows");
                if c.all {
                    return;
                }
                c.rows.insert((t, rowid));
                if c.rows.len() > CHANGED_ROWS_MAX {
                    c.all = true;
                    c.rows = Default::default();
                }
            }))
            .map_err(backend)
    }

    /// Just before the writer commits: tell the cache what this transaction changed, so that
    /// from the moment the change may be visible nothing cached before it is used. Returns
    /// what to tell it again after the commit (which drops what was read in between). After
    /// a rollback the cache hears of keys that did not change: it only reads them again.
    fn before_commit(&self, writer: &Connection) -> Option<Changed> {
        let (watch, cache) = self.watch.as_ref()?;
        let Collected { rows, all } = std::mem::take(&mut *self.collected.lock().expect("changed rows"));
        if rows.is_empty() && !all {
            return None;
        }
        let changed = if all {
            Changed::All
        } else {
            match changed_keys(writer, watch, &rows) {
                Ok(keys) => Changed::Keys(keys),
                Err(e) => {
                    tracing::warn!(message = "Changed keys unreadable; caches dropped.", error = %e);
                    Changed::All
                }
            }
        };
        // The old keys are named only once (the hook's rows lead here again if anything more
        // changes); and a bulk job's are not needed.
        if let Err(e) = writer.prepare_cached(&format!("DELETE FROM {OLD_KEYS}")).and_then(|mut s| s.execute([])) {
            tracing::warn!(message = "Old keys could not be cleared.", error = %e);
        }
        cache.invalidate(&changed);
        Some(changed)
    }

    /// The transaction was rolled back. Whatever it changed is named all the same (the rows'
    /// keys now are the old ones again): a job may have gone on writing after SQLite's own
    /// rollback, and such writes commit on their own.
    fn rolled_back(&self, writer: &Connection) {
        let changed = self.before_commit(writer);
        self.after_commit(changed);
    }

    /// After the commit (or its failure), before any writer hears of it.
    fn after_commit(&self, changed: Option<Changed>) {
        if let (Some((_, cache)), Some(changed)) = (&self.watch, changed) {
            cache.invalidate(&changed);
        }
    }

    /// Has anyone else committed since the writer last looked? Then whatever is cached may
    /// be stale. Run on the writer connection: at the start of each transaction (no one else
    /// can commit until it ends) and when nudged while idle.
    fn look_for_others(&self, writer: &Connection) {
        let Some((_, cache)) = &self.watch else { return };
        let read = writer.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0));
        match read {
            Ok(v) if self.data_version.get() == Some(v) => {}
            Ok(v) => {
                // The first reading (at open) has nothing cached to drop, but drop anyway.
                self.data_version.set(Some(v));
                cache.invalidate(&Changed::All);
            }
            Err(e) => {
                tracing::warn!(message = "The database's data version is unreadable; caches dropped.", error = %e);
                self.data_version.set(None);
                cache.invalidate(&Changed::All);
            }
        }
    }
}

pub(crate) struct Engine {
    path: PathBuf,
    durability: Durability,
    writer: mpsc::Sender<Msg>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_permits: Arc<Semaphore>,
}

pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn open_connection(path: &Path, durability: Durability, write: bool) -> Result<Connection, StoreError> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    if write {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        // A bounded page cache of its own (the writer grows it for bulk jobs: `size_cache`),
        // and a WAL file that does not stay huge after a bulk load.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", WAL_BYTES_KEPT_MAX).map_err(backend)?;
        // Checkpoints run on their own thread (see `checkpointer_loop`), off the writer's path.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).map_err(backend)?;
        // Each job runs in a savepoint; keep its statement journal in memory rather than
        // spilling it to a temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(backend)?;
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(backend)?;
    // Query planner stability: plans never depend on bound values. Without it SQLite marks
    // statements such as `WHERE mpxn = ?1 ... ORDER BY` for re-planning on rebinding, and the
    // statement cache clears bindings on every return, so each run was compiled afresh
    // (about 40% of the request pipeline's CPU).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Engine {
    /// The hub's database; `planning` hears of every change to what requests are planned from.
    pub(crate) fn open(dir: &Path, opts: &SqliteOptions, planning: Arc<dyn Invalidate>) -> Result<Engine, StoreError> {
        Engine::open_file(dir, "meterhub.sqlite3", schema::HUB, Some((&schema::PLANNING, planning)), opts)
    }

    /// Open (creating and migrating) the database `file` in `dir` with its own migrations.
    /// `watch`: tables whose changes a cache hears of (see [`Changes`]).
    pub(crate) fn open_file(
        dir: &Path,
        file: &str,
        migrations: &'static [(i64, &'static str)],
        watch: Option<(&'static schema::Watch, Arc<dyn Invalidate>)>,
        opts: &SqliteOptions,
    ) -> Result<Engine, StoreError> {
        assert!(opts.readers >= 1, "at least one reader");
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create data directory {}: {e}", dir.display())))?;
        let path = dir.join(file);
        let mut conn = open_connection(&path, opts.durability, true)?;
        schema::migrate(&mut conn, migrations)?;
        let changes = Changes::new(watch);
        changes.hook(&mut conn)?;
        changes.look_for_others(&conn);
        let mut readers = Vec::with_capacity(opts.readers);
        for _ in 0..opts.readers {
            readers.push(open_connection(&path, opts.durability, false)?);
        }
        let checkpoint_conn = open_connection(&path, opts.durability, true)?;
        let (stop_checkpoints, stopped) = std::sync::mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("meterhub-store-checkpoint".into())
            .spawn(move || checkpointer_loop(checkpoint_conn, stopped))
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        let (tx, rx) = mpsc::channel::<Msg>(WRITE_QUEUE_MAX);
        let handle = std::thread::Builder::new()
            .name("meterhub-store-writer".into())
            .spawn(move || {
                writer_loop(&conn, rx, &changes);
                // The checkpointer stops first, so the final checkpoint has the WAL to itself.
                drop(stop_checkpoints);
                let _ = checkpointer.join();
                // Fold the WAL back into the database so the directory holds one file at rest.
                if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                    tracing::warn!(message = "Final checkpoint failed; the WAL will be replayed on next open.", error = %e);
                }
                tracing::debug!(message = "Store writer stopped.");
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Engine {
            path,
            durability: opts.durability,
            writer: tx,
            writer_thread: Mutex::new(Some(handle)),
            read_permits: Arc::new(Semaphore::new(readers.len())),
            readers: Arc::new(Mutex::new(readers)),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A read connection of its own, outside the pool (for a background reader).
    pub(crate) fn open_reader(&self) -> Result<Connection, StoreError> {
        open_connection(&self.path, self.durability, false)
    }

    /// Run `f` in the writer's transaction. Returns once the batch holding it is committed.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(f, Some(Guard::Savepoint), |_| {}).await
    }

    /// [`Engine::write_checked_then`] with nothing to do on commit.
    #[cfg(test)]
    pub(crate) async fn write_checked<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(f, Some(Guard::Batch), |_| {}).await
    }

    /// [`Engine::write`] for a job that checks everything before it writes (see
    /// [`Guard::Batch`]): an error from it rolls back its whole batch, so it must return
    /// refusals it foresees as `Ok` values, not as errors. Once it is committed, `committed`
    /// is called with what `f` returned: on the writer, right after the commit, before
    /// whoever wrote hears of it and before the next batch begins. (A reader may see the
    /// commit a moment before.) Not called if the batch does not commit.
    pub(crate) async fn write_checked_then<R, F, C>(&self, f: F, committed: C) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        C: FnOnce(&R) + Send + 'static,
    {
        self.submit(f, Some(Guard::Batch), committed).await
    }

    /// Run `f` alone in a transaction of its own: for bulk jobs.
    pub(crate) async fn write_solo<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(f, None, |_| {}).await
    }

    /// `guard`: how a batched job is undone; `None`: run alone. `committed`: see
    /// [`Engine::write_checked_then`].
    async fn submit<R, F, C>(&self, f: F, guard: Option<Guard>, committed: C) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        C: FnOnce(&R) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: Result<&Connection, StoreError>| {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            let result = f(conn);
            Some(Pending {
                ok: result.is_ok(),
                reply: Box::new(move |commit: Result<(), StoreError>| {
                    if let (Ok(()), Ok(r)) = (&commit, &result) {
                        // It runs on the writer: a panic must not take the writer down, nor
                        // keep the batch's other writers from hearing.
                        let _ = catch_unwind(AssertUnwindSafe(|| committed(r)));
                    }
                    let _ = tx.send(commit.and(result));
                }),
            })
        });
        let msg = match guard {
            None => Msg::Solo(job),
            Some(g) => Msg::Run(job, g),
        };
        self.writer.send(msg).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Backend("the write was abandoned (internal error)".into()))?
    }

    /// Run `f` on a read connection from the pool.
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        // Point reads take microseconds: run them here rather than pay two thread handoffs.
        // The permit bounds concurrent readers to the pool; a caller waits for a free one.
        let permit = self.read_permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let conn = self.readers.lock().expect("reader pool").pop().expect("a permit guarantees a connection");
        let result = catch_unwind(AssertUnwindSafe(|| f(&conn)));
        end_read(&conn);
        self.readers.lock().expect("reader pool").push(conn);
        drop(permit);
        result.unwrap_or_else(|_| Err(StoreError::Backend("a read panicked (internal error)".into())))
    }

    /// Run a long read (a scan) on the blocking thread pool, off the async workers.
    pub(crate) async fn read_heavy<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let permit = self.read_permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("reader pool").pop().expect("a permit guarantees a connection");
            let result = catch_unwind(AssertUnwindSafe(|| f(&conn)));
            end_read(&conn);
            pool.lock().expect("reader pool").push(conn);
            drop(permit);
            result.unwrap_or_else(|_| Err(StoreError::Backend("a read panicked (internal error)".into())))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Stop accepting writes, let queued ones commit, and wait for the writer to finish.
    pub(crate) async fn close(&self) {
        let handle = self.writer_thread.lock().expect("writer handle").take();
        if let Some(handle) = handle {
            // Queued jobs are ahead of the stop message, so they commit first.
            if self.writer.send(Msg::Stop).await.is_ok() {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        }
    }
}

/// Fold the WAL into the database in the background, so the writer never stops to do it.
/// Passive: it copies what no reader still needs and never blocks the writer or readers.
fn checkpointer_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(message = "Background checkpoint failed; retrying.", error = %e);
        }
    }
}

/// Give a read connection back to the pool outside any transaction: a read that began one
/// and failed (or panicked) before ending it would otherwise leave the next reader on an
/// old snapshot, and stop checkpoints.
fn end_read(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// The keys of the changed rows: their key columns now (a row since deleted has none), and
/// the old keys the triggers kept.
fn changed_keys(
    writer: &Connection,
    watch: &schema::Watch,
    rows: &std::collections::HashSet<(usize, i64)>,
) -> Result<Vec<(&'static str, String)>, rusqlite::Error> {
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut note = |col: &str, key: Option<String>| {
        let Some(key) = key else { return };
        let Some(col) = watch.tables.iter().flat_map(|(_, cols)| cols.iter()).find(|c| **c == col) else { return };
        if seen.insert((*col, key.clone())) {
            keys.push((col, key));
        }
    };
    let mut rows: Vec<(usize, i64)> = rows.iter().copied().collect();
    rows.sort_unstable();
    for (t, rowid) in &rows {
        let (table, cols) = watch.tables[*t];
        let mut s = writer.prepare_cached(&format!("SELECT {} FROM main.{table} WHERE rowid = ?1", cols.join(", ")))?;
        let mut found = s.query([rowid])?;
        if let Some(row) = found.next()? {
            for (i, col) in cols.iter().enumerate() {
                note(col, row.get::<_, Option<String>>(i)?);
            }
        }
    }
    let mut s = writer.prepare_cached(&format!("SELECT col, key FROM {OLD_KEYS}"))?;
    let mut old = s.query([])?;
    while let Some(row) = old.next()? {
        note(&row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?);
    }
    Ok(keys)
}

fn writer_loop(conn: &Connection, mut rx: mpsc::Receiver<Msg>, changes: &Changes) {
    let mut batch: Vec<(Job, Guard)> = Vec::with_capacity(WRITE_BATCH_MAX);
    // A message that ended a batch and still has to run.
    let mut held: Option<Msg> = None;
    // The page cache is sized for what runs: bulk jobs or batches (changed only when that
    // changes, as shrinking it drops pages a run of bulk jobs would read again).
    let mut bulk = false;
    // Waits for the next message at most an interval, so that while idle the writer still
    // looks for commits by others every interval (`Changes::look_for_others`).
    let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build();
    if let Err(e) = &waiter {
        tracing::warn!(message = "The writer cannot wait with a timeout; commits by other processes are seen only when it next writes.", error = %e);
    }
    loop {
        let msg = match held.take() {
            Some(m) => m,
            None => match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let next = match &waiter {
                        Ok(rt) => rt.block_on(async { tokio::time::timeout(CHECKPOINT_INTERVAL, rx.recv()).await }),
                        // (Logged once, below.)
                        Err(_) => Ok(rx.blocking_recv()),
                    };
                    match next {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(_) => {
                            changes.look_for_others(conn);
                            continue;
                        }
                    }
                }
            },
        };
        match msg {
            Msg::Stop => break,
            Msg::Solo(job) => {
                size_cache(conn, &mut bulk, true);
                run_solo(conn, job, changes);
            }
            Msg::Run(job, guard) => {
                size_cache(conn, &mut bulk, false);
                batch.push((job, guard));
                while batch.len() < WRITE_BATCH_MAX {
                    match rx.try_recv() {
                        Ok(Msg::Run(job, guard)) => batch.push((job, guard)),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_batch(conn, &mut batch, changes);
            }
        }
    }
    rx.close();
    // Anything that slipped in after the stop still runs: an accepted write is never dropped.
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Run(job, guard) => {
                batch.push((job, guard));
                if batch.len() == WRITE_BATCH_MAX {
                    run_batch(conn, &mut batch, changes);
                }
            }
            Msg::Solo(job) => run_solo(conn, job, changes),
            Msg::Stop => {}
        }
    }
    if !batch.is_empty() {
        run_batch(conn, &mut batch, changes);
    }
}

/// Size the writer's page cache for bulk jobs or for batches, if it is not already.
fn size_cache(conn: &Connection, bulk: &mut bool, for_bulk: bool) {
    if *bulk == for_bulk {
        return;
    }
    let kib = if for_bulk { BULK_CACHE_KIB } else { WRITER_CACHE_KIB };
    match conn.pragma_update(None, "cache_size", -kib) {
        Ok(()) => *bulk = for_bulk,
        Err(e) => tracing::warn!(message = "The writer's page cache could not be resized.", error = %e),
    }
}

/// A batch could not start or was aborted by the database: name it for the callers.
fn unavailable(e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    if text.contains("database is locked") || text.contains("busy") {
        StoreError::Backend("the database is busy: another process holds the write lock (a bulk import?)".into())
    } else {
        StoreError::Backend(format!("the write transaction failed: {text}"))
    }
}

fn run_solo(conn: &Connection, job: Job, changes: &Changes) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(message = "Store transaction could not begin.", error = %e);
        job(Err(unavailable(e)));
        return;
    }
    changes.look_for_others(conn);
    match catch_unwind(AssertUnwindSafe(|| job(Ok(conn)))) {
        Ok(Some(pending)) if pending.ok => {
            let changed = changes.before_commit(conn);
            let commit = conn.execute_batch("COMMIT").map_err(unavailable);
            if let Err(e) = &commit {
                tracing::error!(message = "Store commit failed; the transaction was rolled back.", error = %e);
                let _ = conn.execute_batch("ROLLBACK");
            }
            changes.after_commit(changed);
            (pending.reply)(commit);
        }
        Ok(Some(pending)) => {
            let _ = conn.execute_batch("ROLLBACK");
            changes.rolled_back(conn);
            (pending.reply)(Ok(()));
        }
        Ok(None) => {}
        Err(_) => {
            tracing::error!(message = "A store job panicked; its changes were rolled back.");
            let _ = conn.execute_batch("ROLLBACK");
            changes.rolled_back(conn);
        }
    }
}

/// Run a statement through the connection's statement cache (these run once per write).
fn exec_cached(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Run several reads in one snapshot of a read connection. Cached BEGIN and COMMIT:
/// rusqlite's `Transaction` compiles its statements afresh each time.
pub(crate) fn in_snapshot<R>(
    conn: &Connection,
    reads: impl FnOnce() -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    exec_cached(conn, "BEGIN").map_err(backend)?;
    let found = reads();
    exec_cached(conn, "COMMIT").map_err(backend)?;
    found
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A `Guard::Batch` job: run bare. Its failure is the whole batch's (returned).
fn run_bare(conn: &Connection, job: Job, replies: &mut Vec<Reply>) -> Option<StoreError> {
    match catch_unwind(AssertUnwindSafe(|| job(Ok(conn)))) {
        Ok(Some(pending)) if pending.ok => {
            replies.push(pending.reply);
            None
        }
        Ok(Some(pending)) => {
            // It hears its own error (its reply puts that after the commit's).
            (pending.reply)(Ok(()));
            Some(StoreError::Backend("another write in the same commit failed, so none of them was made".into()))
        }
        Ok(None) => None,
        Err(_) => {
            tracing::error!(message = "A store job panicked; its whole batch was rolled back.");
            Some(StoreError::Backend("a write in the same commit panicked".into()))
        }
    }
}

/// A `Guard::Savepoint` job: run in its own savepoint, undone alone if it fails. Returns
/// what stops the batch from committing, if anything does.
fn run_in_savepoint(conn: &Connection, job: Job, replies: &mut Vec<Reply>) -> Option<StoreError> {
    if let Err(e) = exec_cached(conn, "SAVEPOINT job") {
        let e = unavailable(e);
        job(Err(e.clone()));
        return Some(e);
    }
    match catch_unwind(AssertUnwindSafe(|| job(Ok(conn)))) {
        Ok(Some(pending)) => {
            let mut failed = None;
            if !pending.ok
                && let Err(e) = exec_cached(conn, "ROLLBACK TO job")
            {
                failed = Some(unavailable(e));
            }
            if let Err(e) = exec_cached(conn, "RELEASE job") {
                failed.get_or_insert(unavailable(e));
            }
            replies.push(pending.reply);
            failed
        }
        Ok(None) => None,
        Err(_) => {
            tracing::error!(message = "A store job panicked; its changes were rolled back.");
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
                .err()
                .map(|_| StoreError::Backend("a write panicked and could not be undone".into()))
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut Vec<(Job, Guard)>, changes: &Changes) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(message = "Store batch could not begin.", error = %e, jobs = batch.len());
        let err = unavailable(e);
        for (job, _) in batch.drain(..) {
            job(Err(err.clone()));
        }
        return;
    }
    changes.look_for_others(conn);
    let mut replies = Vec::with_capacity(batch.len());
    // Set when the batch can no longer commit as a whole: every job in it is then refused.
    let mut aborted: Option<StoreError> = None;
    for (job, guard) in batch.drain(..) {
        if let Some(e) = &aborted {
            job(Err(e.clone()));
            continue;
        }
        let failed = match guard {
            Guard::Batch => run_bare(conn, job, &mut replies),
            Guard::Savepoint => run_in_savepoint(conn, job, &mut replies),
        };
        if let Some(e) = failed {
            aborted.get_or_insert(e);
        }
        // Some errors (I/O, full disk) make SQLite roll the whole transaction back; from then
        // on nothing in this batch may be reported as done, nor run outside it.
        if conn.is_autocommit() {
            aborted.get_or_insert(StoreError::Backend("the database aborted the write transaction".into()));
        }
    }
    let changed = if aborted.is_none() { changes.before_commit(conn) } else { None };
    let commit = match aborted {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").map_err(unavailable),
    };
    if let Err(e) = &commit {
        tracing::error!(message = "Store batch failed; it was rolled back and every write in it refused.", error = %e);
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if changed.is_none() {
            changes.rolled_back(conn);
        }
    }
    // Before anyone hears their write is done, so whatever they read next is not stale.
    changes.after_commit(changed);
    for reply in replies {
        reply(commit.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{OptionalExtension, StatementStatus};
    use std::sync::atomic::Ordering;

    /// A cached statement runs again with new values without being compiled again, even with
    /// an equality on a bound value and an ORDER BY (the as-at registry query's shape).
    #[test]
    fn cached_statements_are_not_recompiled_on_rebinding() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.sqlite3"), Durability::Normal, true).unwrap();
        conn.execute_batch(
            "CREATE TABLE r (seq INTEGER PRIMARY KEY, k TEXT NOT NULL, at INTEGER NOT NULL); \
             CREATE INDEX r_by_k ON r(k, at); INSERT INTO r (k, at) VALUES ('a', 1), ('a', 5), ('b', 2);",
        )
        .unwrap();
        let sql = "SELECT seq FROM r WHERE k = ?1 AND at <= ?2 ORDER BY at DESC, seq DESC LIMIT 1";
        for (i, k) in ["a", "b", "a", "c", "b"].iter().enumerate() {
            let mut s = conn.prepare_cached(sql).unwrap();
            let _ = s.query_row(rusqlite::params![k, i as i64 + 3], |r| r.get::<_, i64>(0)).optional().unwrap();
        }
        let s = conn.prepare_cached(sql).unwrap();
        assert_eq!(s.get_status(StatementStatus::RePrepare), 0, "the statement was compiled again");
    }

    /// Hold the writer in a job of its own until the returned sender is used, so that jobs
    /// queued meanwhile share the next batch.
    async fn hold_writer(
        engine: &Arc<Engine>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel::<()>();
        let e = engine.clone();
        let gate_job = tokio::spawn(async move {
            e.write(move |_| {
                started_tx.send(()).unwrap();
                gate.recv().unwrap();
                Ok(())
            })
            .await
        });
        started.await.unwrap();
        (open_gate, gate_job)
    }

    /// Remembers what the writer told it.
    #[derive(Default)]
    struct Heard(Mutex<Vec<Changed>>);

    impl Invalidate for Heard {
        fn invalidate(&self, changed: &Changed) {
            self.0.lock().unwrap().push(changed.clone());
        }
    }

    impl Heard {
        fn take(&self) -> Vec<Changed> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// What is heard of one commit: the same before it and after it.
    fn twice(changed: Changed) -> [Changed; 2] {
        [changed.clone(), changed]
    }

    /// The hub's database, with a listener in place of the planning cache.
    fn open_hub(dir: &Path, opts: &SqliteOptions) -> (Engine, Arc<Heard>) {
        let heard = Arc::new(Heard::default());
        (Engine::open(dir, opts, heard.clone()).unwrap(), heard)
    }

    /// The writer names every metering point and device whose planning facts a commit
    /// changed — new keys and old ones, of inserted, updated and deleted rows — just before
    /// the commit and again after it; a commit that touches none is not heard of; a bulk
    /// job, and a commit by another connection, change everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_names_each_changed_key_before_and_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, heard) = open_hub(dir.path(), &SqliteOptions::default());
        let sql = |sql: &'static str| move |c: &Connection| c.execute_batch(sql).map_err(backend);
        let keys = |k: &[(&'static str, &str)]| Changed::Keys(k.iter().map(|(c, v)| (*c, v.to_string())).collect());
        // Opening looked for others' commits: a first reading drops everything.
        assert_eq!(heard.take(), [Changed::All]);

        engine
            .write(sql(
                "INSERT INTO parties (id, name, roles, originator, created_at) VALUES ('acme', 'A', 'IS', '00', 0); \
                        INSERT INTO premises (id, comms_hub, installed_at, installed_by) VALUES (1, '01', 0, 'acme');",
            ))
            .await
            .unwrap();
        assert_eq!(heard.take(), [], "nothing watched changed");

        engine
            .write(sql("INSERT INTO metering_points (mpxn, fuel, created_at) VALUES ('1312345678907', 'electricity', 0); \
                        INSERT INTO registrations (mpxn, effective_from, supplier, network_operator, meter_type, recorded_at, recorded_by) \
                        VALUES ('1312345678907', 0, 'acme', 'acme', 'smart-compliant', 0, 'acme'); \
                        INSERT INTO enrolments (mpxn, effective_from, enrolled, recorded_at, recorded_by) \
                        VALUES ('1312345678907', 0, 1, 0, 'acme');"))
            .await
            .unwrap();
        assert_eq!(heard.take(), twice(keys(&[("mpxn", "1312345678907")])));

        engine
            .write(sql("INSERT INTO devices (eui, premises_id, kind, installed_at, mpxn) \
                        VALUES ('00000000000000A1', 1, 'electricity-meter', 0, '1312345678907')"))
            .await
            .unwrap();
        assert_eq!(heard.take(), twice(keys(&[("mpxn", "1312345678907"), ("eui", "00000000000000A1")])));

        // Re-linked: the old metering point is named as well as the new one.
        engine.write(sql("UPDATE devices SET mpxn = '1700053058802' WHERE eui = '00000000000000A1'")).await.unwrap();
        assert_eq!(
            heard.take(),
            twice(keys(&[("mpxn", "1700053058802"), ("eui", "00000000000000A1"), ("mpxn", "1312345678907")]))
        );
        // A column that is no key: the row is still named (by its keys now).
        engine.write(sql("UPDATE devices SET on_han = 0 WHERE eui = '00000000000000A1'")).await.unwrap();
        assert_eq!(heard.take(), twice(keys(&[("mpxn", "1700053058802"), ("eui", "00000000000000A1")])));
        engine.write(sql("DELETE FROM devices WHERE eui = '00000000000000A1'")).await.unwrap();
        assert_eq!(heard.take(), twice(keys(&[("mpxn", "1700053058802"), ("eui", "00000000000000A1")])));

        // A checked job that fails takes its whole batch down: what it changed is named all
        // the same (after the rollback, by the keys the rows have then), and only once.
        engine
            .write(sql("INSERT INTO devices (eui, premises_id, kind, installed_at, mpxn) \
                        VALUES ('00000000000000A2', 1, 'gas-meter', 0, '1700053058802')"))
            .await
            .unwrap();
        heard.take();
        let refused = engine
            .write_checked(|c| {
                c.execute_batch("UPDATE devices SET mpxn = NULL WHERE eui = '00000000000000A2'").map_err(backend)?;
                Err::<(), _>(StoreError::Conflict("changed its mind".into()))
            })
            .await;
        assert!(refused.is_err());
        // (The refused job hears at once; the next write waits for the rollback.)
        engine.write(|_| Ok(())).await.unwrap();
        assert_eq!(heard.take(), twice(keys(&[("mpxn", "1700053058802"), ("eui", "00000000000000A2")])));
        engine.write(sql("UPDATE premises SET installed_at = 1")).await.unwrap();
        assert_eq!(heard.take(), [], "named again by a later commit");

        // A bulk job: too many rows to name.
        engine
            .write_solo(|c| {
                for i in 0..(CHANGED_ROWS_MAX + 1) {
                    c.execute(
                        "INSERT INTO devices (eui, premises_id, kind, installed_at) VALUES (?1, 1, 'ppmid', 0)",
                        [format!("{:016X}", 0x1000 + i)],
                    )
                    .map_err(backend)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(heard.take(), [Changed::All, Changed::All]);

        // Another connection's commit (the sqlite3 shell): seen within an interval while
        // the writer is idle.
        let raw = Connection::open(dir.path().join("meterhub.sqlite3")).unwrap();
        raw.execute("UPDATE premises SET installed_at = 2", []).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !heard.take().contains(&Changed::All) {
            assert!(std::time::Instant::now() < deadline, "another connection's commit was never seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.close().await;
    }

    /// Wait until `n` jobs wait in the writer's queue.
    async fn until_queued(engine: &Engine, n: usize) {
        while engine.writer.capacity() > WRITE_QUEUE_MAX - n {
            tokio::task::yield_now().await;
        }
    }

    /// The writer's page cache is large while bulk jobs run alone and small for batches
    /// (each commit walks the whole cache), switching as the kind of work changes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_sizes_its_page_cache_for_bulk_jobs_and_for_batches() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_hub(dir.path(), &SqliteOptions::default()).0;
        let cache = |c: &Connection| c.query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0)).map_err(backend);
        assert_eq!(engine.write(cache).await.unwrap(), -WRITER_CACHE_KIB);
        assert_eq!(engine.write_solo(cache).await.unwrap(), -BULK_CACHE_KIB);
        assert_eq!(engine.write_solo(cache).await.unwrap(), -BULK_CACHE_KIB);
        assert_eq!(engine.write_checked(cache).await.unwrap(), -WRITER_CACHE_KIB);
        engine.close().await;
    }

    /// A read that begins a transaction and fails before ending it gives its connection
    /// back clean: the next read on it sees what was committed since.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_leaves_no_snapshot_behind() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions { durability: Durability::Normal, readers: 1, ..Default::default() };
        let engine = open_hub(dir.path(), &opts).0;
        engine.write(|c| c.execute_batch("CREATE TABLE t (v INTEGER)").map_err(backend)).await.unwrap();
        let count =
            || engine.read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).map_err(backend));
        let failed = engine
            .read(|c| {
                c.execute_batch("BEGIN; SELECT count(*) FROM t;").map_err(backend)?;
                Err::<(), _>(StoreError::Backend("gave up half way".into()))
            })
            .await;
        assert!(failed.is_err());
        engine.write(|c| c.execute_batch("INSERT INTO t VALUES (1)").map_err(backend)).await.unwrap();
        assert_eq!(count().await.unwrap(), 1, "the reader was left on its old snapshot");
    }

    /// A job that runs without a savepoint of its own (`write_checked`) and fails takes its
    /// whole batch down: it hears its own error, the others hear why, and nothing of the
    /// batch is committed. A checked job that succeeds commits with its neighbours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_checked_write_refuses_its_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(open_hub(dir.path(), &SqliteOptions::default()).0);
        engine.write(|c| c.execute_batch("CREATE TABLE t (v INTEGER)").map_err(backend)).await.unwrap();
        let count = |engine: Arc<Engine>| async move {
            engine.read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).map_err(backend)).await
        };

        // Hold the writer until the three jobs below are queued, so they share one batch.
        let (open_gate, gate_job) = hold_writer(&engine).await;
        let e = engine.clone();
        let before =
            tokio::spawn(
                async move { e.write(|c| c.execute_batch("INSERT INTO t VALUES (1)").map_err(backend)).await },
            );
        until_queued(&engine, 1).await;
        let e = engine.clone();
        let failing = tokio::spawn(async move {
            e.write_checked(|c| {
                c.execute_batch("INSERT INTO t VALUES (2)").map_err(backend)?;
                Err::<(), _>(StoreError::Backend("the disk is full".into()))
            })
            .await
        });
        until_queued(&engine, 2).await;
        let e = engine.clone();
        let heard = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = heard.clone();
        let after = tokio::spawn(async move {
            let insert = |c: &Connection| c.execute_batch("INSERT INTO t VALUES (3)").map_err(backend);
            e.write_checked_then(insert, move |_| h.store(true, Ordering::SeqCst)).await
        });
        until_queued(&engine, 3).await;
        open_gate.send(()).unwrap();
        // The gate job ran in a batch of its own, before the others were queued.
        gate_job.await.unwrap().unwrap();
        assert!(before.await.unwrap().is_err(), "an earlier write of the batch must not be reported done");
        assert_eq!(failing.await.unwrap(), Err(StoreError::Backend("the disk is full".into())));
        assert!(after.await.unwrap().is_err(), "a later write of the batch must not be reported done");
        assert_eq!(count(engine.clone()).await.unwrap(), 0, "nothing of the batch may be committed");
        assert!(!heard.load(Ordering::SeqCst), "told of a commit that did not happen");

        // Alone, checked writes commit, and are told so before their writer hears.
        let h = heard.clone();
        let insert = |c: &Connection| c.execute_batch("INSERT INTO t VALUES (4)").map_err(backend);
        engine.write_checked_then(insert, move |_| h.store(true, Ordering::SeqCst)).await.unwrap();
        assert!(heard.load(Ordering::SeqCst));
        assert_eq!(count(engine.clone()).await.unwrap(), 1);
    }

    /// When SQLite aborts a batch's transaction (as it does on I/O errors or a full disk),
    /// no write of that batch is reported done and none is committed behind its back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_batch_refuses_every_write_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(open_hub(dir.path(), &SqliteOptions::default()).0);
        engine.write(|c| c.execute_batch("CREATE TABLE t (v INTEGER)").map_err(backend)).await.unwrap();

        // Hold the writer until both jobs below are queued, so they share one batch.
        let (open_gate, gate_job) = hold_writer(&engine).await;
        let e = engine.clone();
        let aborting = tokio::spawn(async move {
            e.write(|c| {
                c.execute_batch("INSERT INTO t VALUES (1)").map_err(backend)?;
                // What SQLite does to the transaction on a fatal error.
                c.execute_batch("ROLLBACK").map_err(backend)
            })
            .await
        });
        let e = engine.clone();
        let later =
            tokio::spawn(
                async move { e.write(|c| c.execute_batch("INSERT INTO t VALUES (2)").map_err(backend)).await },
            );
        until_queued(&engine, 2).await;
        open_gate.send(()).unwrap();
        gate_job.await.unwrap().unwrap();
        assert!(aborting.await.unwrap().is_err());
        assert!(later.await.unwrap().is_err(), "a write after the abort must not be reported done");
        let n: i64 =
            engine.read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).map_err(backend)).await.unwrap();
        assert_eq!(n, 0, "nothing of the aborted batch may be committed");
        // The writer carries on.
        engine.write(|c| c.execute_batch("INSERT INTO t VALUES (3)").map_err(backend)).await.unwrap();
    }
}
