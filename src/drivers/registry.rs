//! The driver registry: every driver planrun knows, by the name plans use. Adding a driver is
//! one line in `DRIVERS`.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Driver;
use super::{bench, exec, fleet, http, llm, sleep, swarm, ws};
use crate::plan::Catalog;
use crate::plan::de::{DeError, from_node};
use crate::plan::node::Node;

pub struct DriverSpec {
    pub name: &'static str,
    pub parse: fn(&Node) -> Result<Arc<dyn Driver>, DeError>,
    /// The same config from its plain-data form (`StageDriver::config`): how a worker gets the
    /// share of a stage it is handed.
    pub from_json: fn(serde_json::Value) -> Result<Arc<dyn Driver>, String>,
}

impl DriverSpec {
    /// The spec of the driver whose config is `T`.
    pub const fn of<T: DeserializeOwned + Driver + 'static>(name: &'static str) -> DriverSpec {
        DriverSpec { name, parse: parse_as::<T>, from_json: json_as::<T> }
    }
}

fn json_as<T: DeserializeOwned + Driver + 'static>(v: serde_json::Value) -> Result<Arc<dyn Driver>, String> {
    serde_json::from_value::<T>(v).map(|d| Arc::new(d) as Arc<dyn Driver>).map_err(|e| e.to_string())
}

/// Deserialize a driver's config from its fields.
pub fn parse_as<T: DeserializeOwned + Driver + 'static>(node: &Node) -> Result<Arc<dyn Driver>, DeError> {
    from_node::<T>(node).map(|d| Arc::new(d) as Arc<dyn Driver>)
}

/// Plain-data view of a driver config.
pub fn config_of<T: Serialize>(cfg: &T) -> serde_json::Value {
    serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null)
}

/// Every driver planrun knows, by the name plans use.
pub static DRIVERS: &[DriverSpec] = &[
    DriverSpec::of::<bench::Bench>("bench"),
    DriverSpec::of::<exec::Exec>("exec"),
    DriverSpec::of::<fleet::Fleet>("fleet"),
    DriverSpec::of::<http::Http>("http"),
    DriverSpec::of::<llm::Llm>("llm"),
    DriverSpec::of::<sleep::Sleep>("sleep"),
    DriverSpec::of::<swarm::Swarm>("swarm"),
    DriverSpec::of::<ws::Ws>("ws"),
];

pub fn find(name: &str) -> Option<&'static DriverSpec> {
    DRIVERS.iter().find(|d| d.name == name)
}

/// The registry as the plan loader sees it: `plan::load_file_with(path, opts, &Registry)`.
pub struct Registry;

impl Catalog for Registry {
    type Driver = Arc<dyn Driver>;

    fn names(&self) -> Vec<&'static str> {
        DRIVERS.iter().map(|d| d.name).collect()
    }

    fn parse(&self, name: &str, fields: &Node) -> Option<Result<Arc<dyn Driver>, DeError>> {
        find(name).map(|spec| (spec.parse)(fields))
    }
}
