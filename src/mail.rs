//! Outgoing mail (`lettre` over SMTP): the password-reset link from the "forgot password" page.
//! TLS by rustls over aws-lc-rs; each network step of a send (connect, each read or write) times
//! out after 10 s.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::config::SmtpConfig;

/// Sends mail through the configured server.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailer")
    }
}

impl Mailer {
    /// A mailer for `config` (checked by `Config::validate`).
    pub fn new(config: &SmtpConfig) -> Result<Self, String> {
        let builder = match config.tls.as_str() {
            "tls" => SmtpTransport::relay(&config.host).map_err(|e| e.to_string())?,
            "none" => SmtpTransport::builder_dangerous(&config.host),
            _ => SmtpTransport::starttls_relay(&config.host).map_err(|e| e.to_string())?,
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(Duration::from_secs(10)));
        if !config.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                config.username.clone(),
                config.password.clone(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from: config.from.parse().map_err(|_| "smtp.from".to_owned())?,
        })
    }

    /// Send the reset link to `to` (blocking).
    pub fn send_reset(&self, to: &str, name: &str, link: &str) -> Result<(), SendError> {
        let refused = |why: String| SendError {
            why,
            not_delivered: true,
        };
        let to: Mailbox = to
            .parse()
            .map_err(|_| refused("bad recipient".to_owned()))?;
        let body = format!(
            "Hello {name},\n\nSomeone asked to reset the password of your account. If it was you, \
             open this link within 30 minutes to choose a new password:\n\n{link}\n\n\
             If it was not you, ignore this message: your password stays as it is.\n"
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Reset your password")
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| refused(e.to_string()))?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| SendError {
                // The relay answered with a refusal (4xx, 5xx); a lost connection or a timeout may
                // come after the relay took the message.
                not_delivered: e.is_permanent() || e.is_transient(),
                why: e.to_string(),
            })
    }
}

/// A mail not sent, or not known to be.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub why: String,
    /// Certainly not delivered (refused, or never handed over).
    pub not_delivered: bool,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}
