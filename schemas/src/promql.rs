//! callscope's PromQL: the subset it answers ([`subset`]) and its evaluation over window
//! partials ([`eval`]), shared by the alert rules and the Prometheus-compatible query API.

pub mod eval;
pub mod subset;
