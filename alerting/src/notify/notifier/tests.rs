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
fn enqueue_says_whether_every_channel_took_the_notification() {
    // Two channels of one receiver, nobody draining them: room for one and for two.
    let (small, _small_rx) = mpsc::channel(1);
    let (large, _large_rx) = mpsc::channel(2);
    let notifier = Notifier {
        queues: vec![("oncall".into(), "webhook", small), ("oncall".into(), "slack", large)],
        alertmanager_receivers: Vec::new(),
        alertmanager_urls: Vec::new(),
    };
    assert!(notifier.enqueue(&notification("oncall")));
    assert!(!notifier.enqueue(&notification("oncall")), "the webhook queue is full");
    assert!(notifier.enqueue(&notification("nobody")), "a receiver without channels takes everything");
}
