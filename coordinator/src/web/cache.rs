//! A layer's `unit_summary` rows, max images and job ids, kept in memory while they do not
//! change.
//!
//! The view ranks every tuning point of the database, which costs far more than a page may (a
//! layer of 10,000 units has ~760,000 points: seconds on SQLite), so a layer's rows are read
//! once and then served from here: sorting, filtering and paging 10,000 rows in memory takes a
//! millisecond. Whether they are still current is one index range scan (the layer's job
//! counts, see [`LayerStamp`]), done at most once a second per layer. When they have changed
//! (a running campaign), the rows in hand are served while newer ones are read in the
//! background, at most every few seconds; only the very first view of a layer waits, and the
//! campaign page starts that read for its layers ahead of the click. At most [`CAPACITY`]
//! layers are kept (least recently used go first), which bounds the memory: a 10,000-unit
//! layer takes a few MB.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vephys_results::table::{Cell, Table};

use crate::error::Result;
use crate::store::browse::LayerStamp;
use crate::store::Store;

/// Layers kept in memory.
pub const CAPACITY: usize = 16;
/// A layer checked this recently is served without looking at the database.
const FRESH: Duration = Duration::from_secs(1);
/// A changed layer is read again at most this often (a running campaign changes all the time).
const MIN_REBUILD: Duration = Duration::from_secs(3);

/// The columns every `unit_summary` has and the UI depends on.
const KEYS: [&str; 3] = ["campaign_id", "model", "layer"];

pub struct LayerTable {
    pub layer: String,
    /// Every column of the view, as it is in this database.
    pub table: Table,
    /// Where `filter` and `synthesis_status` are.
    pub filter_col: usize,
    pub status_col: Option<usize>,
    /// The columns worth showing: all but the campaign, model and layer, which are the page's.
    pub shown: Vec<usize>,
    /// Row of each filter.
    pub by_filter: HashMap<i64, usize>,
    /// Each filter's max image: (job id, sha256).
    pub images: HashMap<i64, (i64, String)>,
    /// Each filter's jobs (they change only when jobs are added, which changes the stamp).
    pub jobs: HashMap<i64, Vec<i64>>,
    pub stamp: LayerStamp,
    built: Instant,
}

impl LayerTable {
    pub fn filter_of(&self, row: usize) -> i64 {
        match self.table.rows[row][self.filter_col] {
            Cell::Int(f) => f,
            Cell::Float(f) => f as i64,
            _ => -1,
        }
    }

    pub fn status_of(&self, row: usize) -> &str {
        match self.status_col.map(|c| &self.table.rows[row][c]) {
            Some(Cell::Text(s)) => s,
            _ => "missing",
        }
    }
}

struct Entry {
    key: (i64, String),
    table: Arc<LayerTable>,
    checked: Instant,
    used: Instant,
}

/// A layer of a campaign.
type Key = (i64, String);
/// Held while one request reads a layer.
type ReadLock = Arc<tokio::sync::Mutex<()>>;

pub struct LayerCache {
    entries: Mutex<Vec<Entry>>,
    /// One read per layer at a time: concurrent requests for a layer wait for one read.
    reading: Mutex<HashMap<Key, ReadLock>>,
    /// Layers being read again in the background (their stale rows are served meanwhile).
    refreshing: Mutex<HashSet<(i64, String)>>,
}

impl Default for LayerCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerCache {
    pub fn new() -> LayerCache {
        LayerCache {
            entries: Mutex::new(Vec::new()),
            reading: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
        }
    }

    fn lookup(&self, key: &(i64, String), fresh_only: bool) -> Option<Arc<LayerTable>> {
        let mut entries = self.entries.lock().expect("cache lock");
        let e = entries.iter_mut().find(|e| &e.key == key)?;
        if fresh_only && e.checked.elapsed() > FRESH {
            return None;
        }
        e.used = Instant::now();
        Some(e.table.clone())
    }

    fn touch(&self, key: &(i64, String)) {
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some(e) = entries.iter_mut().find(|e| &e.key == key) {
            e.checked = Instant::now();
        }
    }

    fn insert(&self, key: (i64, String), table: Arc<LayerTable>) {
        let mut entries = self.entries.lock().expect("cache lock");
        entries.retain(|e| e.key != key);
        let now = Instant::now();
        entries.push(Entry {
            key,
            table,
            checked: now,
            used: now,
        });
        while entries.len() > CAPACITY {
            let oldest = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
                .expect("not empty");
            entries.swap_remove(oldest);
        }
    }

    /// The lock that makes reads of `key` one at a time.
    fn reading(&self, key: &Key) -> ReadLock {
        let mut locks = self.reading.lock().expect("cache lock");
        // forget locks nobody holds or waits for
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Whether newer rows of this layer are being read.
    pub fn refreshing(&self, campaign_id: i64, layer: &str) -> bool {
        self.refreshing
            .lock()
            .expect("cache lock")
            .contains(&(campaign_id, layer.to_string()))
    }

    /// The layer's rows; None when the campaign has no such layer. Rows that have changed
    /// are served as they were while newer ones are read in the background, so only the
    /// first view of a layer waits for the view.
    pub async fn get(
        self: &Arc<Self>,
        store: &Arc<Store>,
        campaign_id: i64,
        layer: &str,
    ) -> Result<Option<Arc<LayerTable>>> {
        let key = (campaign_id, layer.to_string());
        if let Some(t) = self.lookup(&key, true) {
            return Ok(Some(t));
        }
        let stamp = store.layer_stamp(campaign_id, layer).await?;
        if let Some(t) = self.lookup(&key, false) {
            self.touch(&key);
            if t.stamp != stamp && t.built.elapsed() >= MIN_REBUILD {
                self.refresh(store, key);
            }
            return Ok(Some(t));
        }
        if stamp.jobs == 0 {
            return Ok(None);
        }
        self.read(store, key).await.map(Some)
    }

    /// Reads the layer (once, however many ask at the same time) and keeps it.
    async fn read(&self, store: &Store, key: (i64, String)) -> Result<Arc<LayerTable>> {
        let lock = self.reading(&key);
        let _one = lock.lock().await;
        let stamp = store.layer_stamp(key.0, &key.1).await?;
        // someone else may have read it while this request waited
        if let Some(t) = self.lookup(&key, false) {
            if t.stamp == stamp {
                return Ok(t);
            }
        }
        let table = Arc::new(build(store, key.0, &key.1, stamp).await?);
        self.insert(key, table.clone());
        Ok(table)
    }

    /// Reads the layer again in the background, unless that is already happening.
    fn refresh(self: &Arc<Self>, store: &Arc<Store>, key: (i64, String)) {
        if !self
            .refreshing
            .lock()
            .expect("cache lock")
            .insert(key.clone())
        {
            return;
        }
        let (cache, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            if let Err(error) = cache.read(&store, key.clone()).await {
                tracing::warn!(%error, campaign = key.0, layer = %key.1, "cannot read a layer's rows");
            }
            cache.refreshing.lock().expect("cache lock").remove(&key);
        });
    }

    /// Starts reading a layer nobody has opened yet (the campaign page does this for its
    /// layers, so the grid is ready when it is clicked).
    pub fn prefetch(self: &Arc<Self>, store: &Arc<Store>, campaign_id: i64, layer: &str) {
        let key = (campaign_id, layer.to_string());
        if self.lookup(&key, false).is_some() {
            return;
        }
        self.refresh(store, key);
    }
}

async fn build(
    store: &Store,
    campaign_id: i64,
    layer: &str,
    stamp: LayerStamp,
) -> Result<LayerTable> {
    let table = store.unit_summary_rows(campaign_id, layer).await?;
    let images = store.layer_max_images(campaign_id, layer).await?;
    let mut jobs: HashMap<i64, Vec<i64>> = HashMap::new();
    for (filter, id) in store.layer_jobs(campaign_id, layer).await? {
        jobs.entry(filter).or_default().push(id);
    }
    let column = |name: &str| table.columns.iter().position(|c| c.name == name);
    let filter_col = column("filter").ok_or_else(|| crate::error::Error::Invalid {
        what: "unit_summary view",
        field: "filter".into(),
        reason: "the view has no `filter` column; the results browser needs it".into(),
    })?;
    let status_col = column("synthesis_status");
    let shown = (0..table.columns.len())
        .filter(|&i| !KEYS.contains(&table.columns[i].name.as_str()))
        .collect();
    let mut t = LayerTable {
        layer: layer.to_string(),
        table,
        filter_col,
        status_col,
        shown,
        by_filter: HashMap::new(),
        images: images
            .into_iter()
            .map(|m| (m.filter, (m.job_id, m.sha256)))
            .collect(),
        jobs,
        stamp,
        built: Instant::now(),
    };
    t.by_filter = (0..t.table.rows.len())
        .map(|r| (t.filter_of(r), r))
        .collect();
    Ok(t)
}
