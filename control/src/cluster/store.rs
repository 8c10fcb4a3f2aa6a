//! The cluster's shared state in Redis: the node registry, room owners and
//! the event channel, each operation one round trip (reads) or one Lua
//! script (compare-and-set), so two nodes never both own a room.
//!
//! # Keys
//! Every key starts with the cluster's hash tag `{NAME}`, so a Redis
//! Cluster keeps them in one slot and the scripts may touch several:
//!
//! | key | type | what |
//! |---|---|---|
//! | `{NAME}:nodes` | set | ids of nodes that registered and were not cleaned up |
//! | `{NAME}:node:ID` | string, TTL | the node's [`NodeEntry`] as JSON, rewritten every heartbeat |
//! | `{NAME}:room:ROOM` | string | the id of the room's owner |
//! | `{NAME}:rooms:ID` | set | the rooms node ID owns |
//! | `{NAME}:events` | channel | `room_moved` events as JSON |
//!
//! A node is alive while its entry exists; its rooms set and its member of
//! `nodes` outlive it until a survivor has taken every room over.
//!
//! # Redis Cluster
//! `cluster.redis` with several URLs, comma separated (the seed nodes of a
//! Redis Cluster), connects with redis-rs's cluster client, which follows
//! the slot map and `MOVED` redirects; one URL connects to one server (or
//! Valkey) with its connection manager. Every command and script touches
//! keys of one hash tag, so both work the same.

use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// How long one Redis command may take before it counts as failed: an
/// outage must not hold an API request (placement falls back to this node).
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A node as the registry shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node's id (`node_id`).
    pub id: String,
    /// `serving` or `draining`.
    pub state: NodeState,
    /// Where peers reach its control API.
    pub control_url: String,
    /// Its workers' media addresses, as advertised.
    pub media: Vec<String>,
    /// Rooms it holds.
    pub rooms: usize,
    /// Endpoints it holds.
    pub endpoints: usize,
    /// Its room and endpoint capacity (its limits).
    pub capacity_rooms: usize,
    /// See `capacity_rooms`.
    pub capacity_endpoints: usize,
    /// Per worker: (rooms, endpoints, up).
    pub workers: Vec<(usize, usize, bool)>,
    /// The larger of its room and endpoint share of its capacity, 0-1.
    pub load: f64,
    /// When the entry was written, ms since the Unix epoch (its clock).
    pub at_ms: u64,
}

/// Whether a node takes new rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes new rooms.
    Serving,
    /// Keeps its rooms, takes no new one.
    Draining,
}

impl NodeState {
    /// `serving` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
        }
    }
}

/// What the registry holds: live entries, and ids registered whose entry
/// expired (dead nodes not yet cleaned up).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Live nodes.
    pub live: Vec<NodeEntry>,
    /// Dead nodes.
    pub dead: Vec<String>,
    /// Entries that are not a [`NodeEntry`] (skipped).
    pub unreadable: usize,
}

/// Writes a node's entry with its TTL and adds it to the node set.
/// KEYS: entry, node set. ARGV: JSON, TTL ms, node id.
const REGISTER: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1";

/// Claims a room for ARGV[1] if nobody owns it; returns the owner after.
/// KEYS: room key, claimer's rooms set. ARGV: node id, room.
const CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
  return ARGV[1]
end
return owner";

/// Takes a room over from a dead owner: only while the room's owner is
/// ARGV[2] and that owner's entry is gone. Returns the owner after.
/// KEYS: room key, new owner's rooms set, old owner's entry, old owner's
/// rooms set. ARGV: new owner, old owner, room.
const TAKE_OVER: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[2] and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('SREM', KEYS[4], ARGV[3])
  return ARGV[1]
end
if not owner then
  redis.call('SREM', KEYS[4], ARGV[3])
  return false
end
if owner ~= ARGV[2] then
  redis.call('SREM', KEYS[4], ARGV[3])
end
return owner";

/// Gives a room up: deletes the owner key only if it is still ARGV[1].
/// KEYS: room key, owner's rooms set. ARGV: node id, room.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1";

/// A connection to one Redis server, or to a Redis Cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where to connect.
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// The connection to the cluster's Redis: one multiplexed connection
/// (redis-rs's connection manager or cluster connection, which reconnect by
/// themselves), opened on first use so a node starts while Redis is down.
pub struct Store {
    client: Client,
    conn: Mutex<Option<Conn>>,
    tag: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.client {
            Client::Single(_) => "single",
            Client::Cluster(_) => "cluster",
        };
        f.debug_struct("Store")
            .field("tag", &self.tag)
            .field("redis", &kind)
            .finish()
    }
}

/// A Redis error or a command that took longer than [`COMMAND_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer in time.
    #[error("redis did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
    /// An entry that is not a node's JSON.
    #[error("a registry entry is not valid JSON: {0}")]
    Entry(#[from] serde_json::Error),
}

impl Store {
    /// A store for the cluster `name` at `url` (several, comma separated:
    /// a Redis Cluster's seeds); connects on first use.
    pub fn new(url: &str, name: &str) -> Result<Self, StoreError> {
        let urls: Vec<&str> = url.split(',').map(str::trim).collect();
        let client = if urls.len() > 1 {
            Client::Cluster(
                ClusterClientBuilder::new(urls)
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(1)
                    .build()?,
            )
        } else {
            Client::Single(redis::Client::open(url)?)
        };
        Ok(Self {
            client,
            conn: Mutex::new(None),
            tag: format!("{{{name}}}"),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.tag)
    }

    /// The key of node `id`'s entry.
    fn node_key(&self, id: &str) -> String {
        self.key(&format!("node:{id}"))
    }

    /// The key of the room's owner.
    fn room_key(&self, room: &str) -> String {
        self.key(&format!("room:{room}"))
    }

    /// The key of the set of rooms node `id` owns.
    fn rooms_key(&self, id: &str) -> String {
        self.key(&format!("rooms:{id}"))
    }

    /// The event channel.
    pub fn channel(&self) -> String {
        self.key("events")
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = match &self.client {
            Client::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(COMMAND_TIMEOUT)
                    .set_response_timeout(COMMAND_TIMEOUT)
                    .set_number_of_retries(1)
                    .set_max_delay(200);
                let c = tokio::time::timeout(
                    COMMAND_TIMEOUT * 2,
                    client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| StoreError::Timeout)??;
                Conn::Single(c)
            }
            Client::Cluster(client) => {
                let c = tokio::time::timeout(COMMAND_TIMEOUT * 2, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::Timeout)??;
                Conn::Cluster(c)
            }
        };
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the connection within [`COMMAND_TIMEOUT`].
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        tokio::time::timeout(COMMAND_TIMEOUT, f(conn))
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(StoreError::from)
    }

    /// Runs the Lua script `src` (one of this module's constants) with
    /// `keys` and `args`.
    async fn script<T>(
        &self,
        src: &'static str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue + Send,
    {
        self.run(|mut c| async move {
            let script = redis::Script::new(src);
            let mut call = script.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            for a in &args {
                call.arg(a);
            }
            call.invoke_async(&mut c).await
        })
        .await
    }

    /// Writes this node's entry with a TTL, and its id into the node set.
    pub async fn register(&self, entry: &NodeEntry, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(entry)?;
        let keys = vec![self.node_key(&entry.id), self.key("nodes")];
        let ttl_ms = ttl.as_millis().to_string();
        self.script(REGISTER, keys, vec![json, ttl_ms, entry.id.clone()])
            .await
    }

    /// Removes this node's entry at once (a clean shutdown); its rooms are
    /// taken over as a dead node's.
    pub async fn deregister(&self, id: &str) -> Result<(), StoreError> {
        let key = self.node_key(id);
        self.run(|mut c| async move { c.del::<_, ()>(&key).await })
            .await
    }

    /// The registry: every registered id, its entry if alive.
    pub async fn registry(&self) -> Result<Registry, StoreError> {
        let nodes = self.key("nodes");
        let ids: Vec<String> = self
            .run(|mut c| async move { c.smembers(&nodes).await })
            .await?;
        if ids.is_empty() {
            return Ok(Registry::default());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let values: Vec<Option<String>> = self
            .run(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        let mut registry = Registry::default();
        for (id, value) in ids.into_iter().zip(values) {
            match value.map(|json| serde_json::from_str::<NodeEntry>(&json)) {
                Some(Ok(entry)) => registry.live.push(entry),
                // A node of another version, or junk: not one to place
                // rooms on or take rooms from, and no reason to stop
                // reading the others.
                Some(Err(e)) => {
                    tracing::warn!(node = %id, error = %e, "unreadable registry entry skipped");
                    registry.unreadable += 1;
                }
                None => registry.dead.push(id),
            }
        }
        registry.live.sort_by(|a, b| a.id.cmp(&b.id));
        registry.dead.sort();
        Ok(registry)
    }

    /// Node `id`'s entry, if it is alive.
    pub async fn node(&self, id: &str) -> Result<Option<NodeEntry>, StoreError> {
        let key = self.node_key(id);
        let json: Option<String> = self.run(|mut c| async move { c.get(&key).await }).await?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// The room's owner, if any.
    pub async fn owner(&self, room: &str) -> Result<Option<String>, StoreError> {
        let key = self.room_key(room);
        self.run(|mut c| async move { c.get(&key).await }).await
    }

    /// Claims `room` for `me` unless someone owns it; the owner after.
    pub async fn claim(&self, room: &str, me: &str) -> Result<String, StoreError> {
        let keys = vec![self.room_key(room), self.rooms_key(me)];
        self.script(CLAIM, keys, vec![me.to_owned(), room.to_owned()])
            .await
    }

    /// Takes `room` over from the dead node `from`; the owner after
    /// (`None`: nobody owns it any more).
    pub async fn take_over(
        &self,
        room: &str,
        me: &str,
        from: &str,
    ) -> Result<Option<String>, StoreError> {
        let keys = vec![
            self.room_key(room),
            self.rooms_key(me),
            self.node_key(from),
            self.rooms_key(from),
        ];
        let args = vec![me.to_owned(), from.to_owned(), room.to_owned()];
        self.script(TAKE_OVER, keys, args).await
    }

    /// Gives `room` up if `me` owns it.
    pub async fn release(&self, room: &str, me: &str) -> Result<(), StoreError> {
        let keys = vec![self.room_key(room), self.rooms_key(me)];
        self.script(RELEASE, keys, vec![me.to_owned(), room.to_owned()])
            .await
    }

    /// The rooms node `id` owns (by its set).
    pub async fn rooms_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let key = self.rooms_key(id);
        self.run(|mut c| async move { c.smembers(&key).await })
            .await
    }

    /// Forgets a dead node whose rooms were all taken over: its set and its
    /// member of the node set, unless it came back meanwhile.
    /// Records that relay node `node` serves endpoint `endpoint` of `room`
    /// (`{NAME}:relayed:ROOM`, endpoint → node), so a request for it
    /// reaching any node is passed there.
    pub async fn relayed_set(
        &self,
        room: &str,
        endpoint: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        let (key, endpoint, node) = (
            self.key(&format!("relayed:{room}")),
            endpoint.to_owned(),
            node.to_owned(),
        );
        self.run(|mut c| async move { c.hset(&key, &endpoint, &node).await })
            .await
    }

    /// The relay node serving endpoint `endpoint` of `room`, if any.
    pub async fn relayed_get(
        &self,
        room: &str,
        endpoint: &str,
    ) -> Result<Option<String>, StoreError> {
        let (key, endpoint) = (self.key(&format!("relayed:{room}")), endpoint.to_owned());
        self.run(|mut c| async move { c.hget(&key, &endpoint).await })
            .await
    }

    /// How many endpoints of `room` each relay node serves.
    pub async fn relayed_counts(
        &self,
        room: &str,
    ) -> Result<std::collections::HashMap<String, usize>, StoreError> {
        let key = self.key(&format!("relayed:{room}"));
        self.run(|mut c| async move {
            let all: std::collections::HashMap<String, String> = c.hgetall(&key).await?;
            let mut counts = std::collections::HashMap::new();
            for node in all.into_values() {
                *counts.entry(node).or_insert(0) += 1;
            }
            Ok(counts)
        })
        .await
    }

    /// The endpoints of `room` that relay node `node` serves.
    pub async fn relayed_of(&self, room: &str, node: &str) -> Result<Vec<String>, StoreError> {
        let (key, node) = (self.key(&format!("relayed:{room}")), node.to_owned());
        self.run(|mut c| async move {
            let all: std::collections::HashMap<String, String> = c.hgetall(&key).await?;
            Ok(all
                .into_iter()
                .filter(|(_, n)| *n == node)
                .map(|(e, _)| e)
                .collect())
        })
        .await
    }

    /// Forgets relayed endpoints of `room`: those named, or all of the
    /// node `node`'s when `endpoints` is empty (its relay closed).
    pub async fn relayed_forget(
        &self,
        room: &str,
        node: &str,
        endpoints: &[String],
    ) -> Result<(), StoreError> {
        let (key, node, endpoints) = (
            self.key(&format!("relayed:{room}")),
            node.to_owned(),
            endpoints.to_vec(),
        );
        self.run(|mut c| async move {
            let gone: Vec<String> = if endpoints.is_empty() {
                let all: std::collections::HashMap<String, String> = c.hgetall(&key).await?;
                all.into_iter()
                    .filter(|(_, n)| *n == node)
                    .map(|(e, _)| e)
                    .collect()
            } else {
                endpoints
            };
            if !gone.is_empty() {
                c.hdel::<_, _, ()>(&key, &gone).await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn forget(&self, id: &str) -> Result<(), StoreError> {
        let (entry, rooms, nodes, id) = (
            self.node_key(id),
            self.rooms_key(id),
            self.key("nodes"),
            id.to_owned(),
        );
        self.run(|mut c| async move {
            let alive: bool = c.exists(&entry).await?;
            let left: usize = c.scard(&rooms).await?;
            if !alive && left == 0 {
                c.srem::<_, _, ()>(&nodes, &id).await?;
            }
            Ok(())
        })
        .await
    }

    /// Publishes `json` on the event channel.
    pub async fn publish(&self, json: String) -> Result<(), StoreError> {
        let channel = self.channel();
        self.run(|mut c| async move { c.publish::<_, _, ()>(&channel, json).await })
            .await
    }
}
