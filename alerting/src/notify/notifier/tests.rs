use super::*;

fn notification(receiver: &str) -> Notification {
    Notification {
        receiver: receiver.into(),
        group_key: "{0}:".into(),
        group_labels: Default::default(),
        alerts: Vec::new(),
        at_ms: 0,
    }
}

#[test]
fn enqueue_says_which_channels_took_the_notification() {
    // Two channels of one receiver, nobody draining them: room for one and for two.
    let (small, _small_rx) = mpsc::channel(1);
    let (large, _large_rx) = mpsc::channel(2);
    let queue =
        |channel: &str, kind: &'static str, tx| Queue { receiver: "oncall".into(), channel: channel.into(), kind, tx };
    let notifier = Notifier {
        queues: vec![queue("webhook#0", "webhook", small), queue("slack#0", "slack", large)],
        alertmanager_receivers: Vec::new(),
        alertmanager_urls: Vec::new(),
    };
    let both = notifier.channels_of("oncall");
    assert_eq!(both.iter().map(String::as_str).collect::<Vec<_>>(), ["slack#0", "webhook#0"]);
    assert_eq!(notifier.enqueue(&notification("oncall"), 0, &both), both);
    let took = notifier.enqueue(&notification("oncall"), 1, &both);
    assert_eq!(took.iter().map(String::as_str).collect::<Vec<_>>(), ["slack#0"], "the webhook queue is full");
    assert!(notifier.channels_of("nobody").is_empty());
}
