//! RDS: where a database instance or Aurora cluster lives, its engine, and the Secrets Manager
//! secret RDS manages for its master user (`rds!db-…` / `rds!cluster-…`).

use aws_sdk_rds::Client;
use aws_sdk_rds::types::{DbCluster, DbInstance};

use super::{ApiCalls, AwsError, call};

const SERVICE: &str = "rds";

/// Connection facts of an RDS instance or Aurora cluster (the writer endpoint).
#[derive(Clone, Debug)]
pub struct DbEndpointInfo {
    /// RDS engine name: `postgres`, `mysql`, `mariadb`, `aurora-postgresql`, `aurora-mysql`, …
    pub engine: String,
    /// Empty while RDS has not assigned an endpoint yet (status `creating`).
    pub host: String,
    /// The endpoint's port; the engine's default port when RDS reports none yet.
    pub port: u16,
    pub master_username: Option<String>,
    /// ARN of the secret RDS manages for the master user (ManageMasterUserPassword).
    pub master_user_secret_arn: Option<String>,
    pub database_name: Option<String>,
    pub arn: String,
    /// `available`, `creating`, `modifying`, …
    pub status: String,
}

/// RDS client of one scope (region + credentials).
#[derive(Clone)]
pub struct Rds {
    client: Client,
    calls: ApiCalls,
}

impl Rds {
    pub(crate) fn new(client: Client, calls: ApiCalls) -> Rds {
        Rds { client, calls }
    }

    /// DescribeDBInstances for one instance identifier; `None` if it does not exist.
    pub async fn describe_instance(&self, id: &str) -> Result<Option<DbEndpointInfo>, AwsError> {
        let request = self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send();
        match call(&self.calls, SERVICE, "DescribeDBInstances", id, request).await {
            Ok(out) => Ok(out.db_instances().first().map(instance_info)),
            Err(AwsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// DescribeDBClusters for one cluster identifier; `None` if it does not exist.
    pub async fn describe_cluster(&self, id: &str) -> Result<Option<DbEndpointInfo>, AwsError> {
        let request = self
            .client
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send();
        match call(&self.calls, SERVICE, "DescribeDBClusters", id, request).await {
            Ok(out) => Ok(out.db_clusters().first().map(cluster_info)),
            Err(AwsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn instance_info(i: &DbInstance) -> DbEndpointInfo {
    let engine = i.engine().unwrap_or_default().to_string();
    let endpoint = i.endpoint();
    let port = endpoint
        .and_then(|e| e.port())
        .or(i.db_instance_port().filter(|p| *p > 0));
    DbEndpointInfo {
        host: endpoint
            .and_then(|e| e.address())
            .unwrap_or_default()
            .to_string(),
        port: port_or_default(port, &engine),
        master_username: i.master_username().map(str::to_string),
        master_user_secret_arn: i
            .master_user_secret()
            .and_then(|s| s.secret_arn())
            .map(str::to_string),
        database_name: i.db_name().map(str::to_string),
        arn: i.db_instance_arn().unwrap_or_default().to_string(),
        status: i.db_instance_status().unwrap_or_default().to_string(),
        engine,
    }
}

fn cluster_info(c: &DbCluster) -> DbEndpointInfo {
    let engine = c.engine().unwrap_or_default().to_string();
    DbEndpointInfo {
        host: c.endpoint().unwrap_or_default().to_string(),
        port: port_or_default(c.port(), &engine),
        master_username: c.master_username().map(str::to_string),
        master_user_secret_arn: c
            .master_user_secret()
            .and_then(|s| s.secret_arn())
            .map(str::to_string),
        database_name: c.database_name().map(str::to_string),
        arn: c.db_cluster_arn().unwrap_or_default().to_string(),
        status: c.status().unwrap_or_default().to_string(),
        engine,
    }
}

fn port_or_default(port: Option<i32>, engine: &str) -> u16 {
    port.and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(if engine.contains("postgres") {
            5432
        } else {
            3306
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_rds::types::{Endpoint, MasterUserSecret};

    #[test]
    fn instance_fields_are_mapped() {
        let i = DbInstance::builder()
            .engine("postgres")
            .db_instance_status("available")
            .master_username("postgres")
            .db_name("app")
            .db_instance_arn("arn:aws:rds:us-east-1:1:db:d")
            .endpoint(
                Endpoint::builder()
                    .address("d.x.rds.amazonaws.com")
                    .port(5433)
                    .build(),
            )
            .master_user_secret(
                MasterUserSecret::builder()
                    .secret_arn("arn:aws:secretsmanager:us-east-1:1:secret:rds!db-1")
                    .build(),
            )
            .build();
        let info = instance_info(&i);
        assert_eq!(
            (info.host.as_str(), info.port),
            ("d.x.rds.amazonaws.com", 5433)
        );
        assert_eq!(
            info.master_user_secret_arn.as_deref(),
            Some("arn:aws:secretsmanager:us-east-1:1:secret:rds!db-1")
        );
        assert_eq!(info.database_name.as_deref(), Some("app"));
    }

    #[test]
    fn missing_endpoint_gets_engine_default_port() {
        let c = DbCluster::builder()
            .engine("aurora-mysql")
            .status("creating")
            .build();
        let info = cluster_info(&c);
        assert_eq!((info.host.as_str(), info.port), ("", 3306));
        let c = DbCluster::builder().engine("aurora-postgresql").build();
        assert_eq!(cluster_info(&c).port, 5432);
    }
}
