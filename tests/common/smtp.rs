//! A local SMTP sink on 127.0.0.1: accepts every message (plain SMTP, no TLS) and keeps it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    /// How many of the next messages to refuse (554 after the data).
    refuse: Arc<AtomicUsize>,
}

impl SmtpSink {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind smtp sink");
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicUsize::new(0));
        let kept = messages.clone();
        let refusing = refuse.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                let refusing = refusing.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut out = stream.try_clone().expect("clone");
                    let mut lines = BufReader::new(stream);
                    let _ = out.write_all(b"220 sink.local ESMTP\r\n");
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let verb = line.trim().to_ascii_uppercase();
                        let reply: &[u8] = if verb.starts_with("EHLO") {
                            b"250-sink.local\r\n250 8BITMIME\r\n"
                        } else if verb.starts_with("HELO")
                            || verb.starts_with("MAIL")
                            || verb.starts_with("RCPT")
                            || verb.starts_with("RSET")
                            || verb.starts_with("NOOP")
                        {
                            b"250 OK\r\n"
                        } else if verb == "DATA" {
                            let _ = out.write_all(b"354 go on\r\n");
                            let mut body = String::new();
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                body.push_str(&line);
                            }
                            let refused = refusing
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                            if refused {
                                b"554 refused\r\n"
                            } else {
                                kept.lock().unwrap().push(body);
                                b"250 queued\r\n"
                            }
                        } else if verb == "QUIT" {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        } else {
                            b"502 not here\r\n"
                        };
                        let _ = out.write_all(reply);
                    }
                });
            }
        });
        Self {
            port,
            messages,
            refuse,
        }
    }

    /// Refuse the next `n` messages.
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// Wait until `n` messages have arrived.
    pub fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let m = self.messages.lock().unwrap().clone();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}
