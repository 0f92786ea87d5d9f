//! Notifications: routing, grouping and deduplication like Alertmanager ([`dispatch`]), the
//! configuration ([`config`]), what each channel sends ([`payloads`]), the channels
//! ([`channels`]), the per-channel delivery tasks ([`notifier`]) and the notifications on
//! their way ([`outbox`]).

pub mod channels;
pub mod config;
pub mod dispatch;
pub mod notifier;
pub mod outbox;
pub mod payloads;
