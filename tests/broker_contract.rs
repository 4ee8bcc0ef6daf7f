//! The `Broker` contract (see its docs) run against every broker this crate
//! ships: the in-memory broker, and the Redis broker against a real
//! `redis-server` and a real Redis Cluster started for the test. The suite
//! itself is `sse_runtime::testing::broker_contract`, one function per
//! promise, so a broker of your own runs the same tests.

use sse_runtime::testing::broker_contract::BrokerUnderTest;
use sse_runtime::{Registry, RegistryConfig};
use sse_tests::redis_cluster::{self, RedisCluster};
use sse_tests::redis_server::{self, RedisServer};

struct Memory;

impl BrokerUnderTest for Memory {
    async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        Registry::with_config(config)
    }

    async fn stored_keys(&self, registry: &Registry<String>) -> usize {
        registry.key_count()
    }
}

struct Redis(RedisServer);

impl BrokerUnderTest for Redis {
    async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        self.0.registry(config).await
    }

    async fn stored_keys(&self, _: &Registry<String>) -> usize {
        let client = ::redis::Client::open(self.0.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("DBSIZE")
            .query_async(&mut connection)
            .await
            .unwrap()
    }
}

struct Cluster(RedisCluster);

impl BrokerUnderTest for Cluster {
    async fn registry(&self, config: RegistryConfig) -> Registry<String> {
        self.0.registry(config).await
    }

    async fn stored_keys(&self, _: &Registry<String>) -> usize {
        self.0.keys_per_node().await.iter().sum()
    }
}

mod memory {
    use super::*;
    sse_runtime::broker_contract_tests!(Some(Memory));
}

mod redis {
    use super::*;
    sse_runtime::broker_contract_tests!(redis_server::start(false).await.map(Redis));
}

mod cluster {
    use super::*;
    sse_runtime::broker_contract_tests!(redis_cluster::start().await.map(Cluster));
}
