//! What a connection is made with, and whether that changed while it is open.

use std::sync::Arc;

use crate::core::broker_options::TlsOptions;
use crate::core::settings::Settings;
use crate::core::uri::Endpoint;
use crate::state::shared::Shared;

/// The brokers in order and the TLS options, from the settings and the broker configs. Any
/// change means a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub endpoints: Vec<Endpoint>,
    pub tls: TlsOptions,
}

impl Plan {
    pub fn of(shared: &Shared, settings: &Settings) -> Plan {
        Plan {
            endpoints: shared.endpoints(settings),
            tls: shared.tls_options(),
        }
    }
}

/// Tells cheaply whether the [`Plan`] changed: only when the settings or the broker configs
/// changed is it built again and compared.
pub struct PlanWatch {
    settings: Arc<Settings>,
    generation: u64,
}

impl PlanWatch {
    pub fn new(shared: &Shared) -> PlanWatch {
        PlanWatch {
            generation: shared.broker_generation(),
            settings: shared.settings(),
        }
    }

    /// The plan the watch started from.
    pub fn plan(&self, shared: &Shared) -> Plan {
        Plan::of(shared, &self.settings)
    }

    pub fn changed(&mut self, shared: &Shared, plan: &Plan) -> bool {
        let settings = shared.settings();
        let generation = shared.broker_generation();
        if Arc::ptr_eq(&settings, &self.settings) && generation == self.generation {
            return false;
        }
        self.settings = settings;
        self.generation = generation;
        Plan::of(shared, &self.settings) != *plan
    }
}
