//! Notifications: routing, grouping and deduplication like Alertmanager ([`dispatch`]),
//! the configuration ([`config`]), and the channels that deliver ([`channels`]).

pub mod channels;
pub mod config;
pub mod dispatch;
