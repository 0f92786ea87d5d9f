//! Notifications: routing, grouping and deduplication like Alertmanager ([`dispatch`]), the
//! configuration ([`config`]), what each channel sends ([`payloads`]), the channels
//! ([`channels`]) and the per-channel delivery tasks ([`notifier`]).

pub mod channels;
pub mod config;
pub mod dispatch;
pub mod notifier;
pub mod payloads;
