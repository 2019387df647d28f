//! A [`Dsn`] as the driver's configuration: the keys dlb passes on, and the protection keys
//! it cannot enforce, refused (fail closed).

use super::*;

impl Dsn {
    /// A driver configuration for this DSN's first host (TCP or Unix socket), with every
    /// setting the driver knows: tokio-postgres's, which the sync `postgres` driver's converts
    /// from (`postgres::Config::from`). TLS settings (`ssl*`) are not the driver's: see
    /// [`crate::server::tls`] where supported.
    ///
    /// Fails closed: a key that asks for a protection is enforced or refused here, never
    /// accepted and ignored.
    /// * `channel_binding` (`disable`, `prefer` (libpq's default, the driver's too), `require`)
    ///   is the driver's; dlb's TLS stream gives it `tls-server-end-point`, so `require`
    ///   accepts only SCRAM-SHA-256-PLUS, over TLS. `require` with `sslmode=disable` is
    ///   refused: it could never connect.
    /// * `require_auth`: the driver answers whichever authentication the server asks for, so
    ///   dlb cannot enforce a list of methods; the value is refused unless every outcome the
    ///   driver allows satisfies it ([`require_auth_satisfied`]).
    /// * `gssencmode`: `disable` and `prefer` (dlb never uses GSS encryption, as libpq without
    ///   GSS support); `require` is refused.
    /// * `requirepeer`: refused (dlb does not check a Unix socket server's user).
    ///
    /// # Errors
    /// A message naming the keyword whose value the driver cannot take, or that dlb cannot
    /// enforce.
    pub(crate) fn driver_config(&self) -> std::result::Result<tokio_postgres::Config, String> {
        self.refuse_unenforced()?;
        let mut c = tokio_postgres::Config::new();
        let hp = self.host_port();
        let host = self
            .get("host")
            .and_then(|h| h.split(',').next())
            .filter(|h| !h.is_empty());
        match self.get("hostaddr").and_then(|h| h.split(',').next()) {
            Some(addr) if !addr.is_empty() => {
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| "`hostaddr` must be an IP address".to_string())?;
                c.hostaddr(ip);
                // The name, for TLS verification, when one is given.
                c.host(host.unwrap_or(addr));
            }
            _ => {
                c.host(&hp.host);
            }
        }
        c.port(hp.port);
        let number = |k: &str, v: &str| -> std::result::Result<u64, String> {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{k}` must be a number"))
        };
        for (k, v) in &self.params {
            match k.as_str() {
                "user" => {
                    c.user(v);
                }
                "password" => {
                    c.password(v.as_bytes());
                }
                "dbname" => {
                    c.dbname(v);
                }
                "options" => {
                    c.options(v);
                }
                "application_name" => {
                    c.application_name(v);
                }
                "connect_timeout" => {
                    let s = number(k, v)?;
                    if s > 0 {
                        c.connect_timeout(std::time::Duration::from_secs(s.min(86_400)));
                    }
                }
                "keepalives" => {
                    c.keepalives(number(k, v)? != 0);
                }
                "keepalives_idle" => {
                    c.keepalives_idle(std::time::Duration::from_secs(number(k, v)?.min(86_400)));
                }
                "keepalives_interval" => {
                    c.keepalives_interval(std::time::Duration::from_secs(
                        number(k, v)?.min(86_400),
                    ));
                }
                "keepalives_count" => {
                    c.keepalives_retries(u32::try_from(number(k, v)?).unwrap_or(u32::MAX));
                }
                "tcp_user_timeout" => {
                    c.tcp_user_timeout(std::time::Duration::from_millis(
                        number(k, v)?.min(86_400_000),
                    ));
                }
                "target_session_attrs" => {
                    c.target_session_attrs(match v.as_str() {
                        "any" => postgres::config::TargetSessionAttrs::Any,
                        "read-write" => postgres::config::TargetSessionAttrs::ReadWrite,
                        _ => {
                            return Err(
                                "`target_session_attrs` must be `any` or `read-write`".into()
                            );
                        }
                    });
                }
                "channel_binding" => {
                    c.channel_binding(match v.as_str() {
                        "disable" => postgres::config::ChannelBinding::Disable,
                        "prefer" => postgres::config::ChannelBinding::Prefer,
                        "require" => postgres::config::ChannelBinding::Require,
                        _ => {
                            return Err(
                                "`channel_binding` must be disable, prefer or require".into()
                            );
                        }
                    });
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// The protection keys of [`Dsn::driver_config`] that dlb cannot enforce, refused (their
    /// last values, as libpq: a later setting wins; an empty value is no setting).
    fn refuse_unenforced(&self) -> std::result::Result<(), String> {
        let nonempty = |k: &str| self.get(k).filter(|v| !v.is_empty());
        let binding = nonempty("channel_binding") == Some("require");
        if binding && nonempty("sslmode") == Some("disable") {
            return Err(
                "`channel_binding`: `require` needs TLS, but sslmode=disable (the \
                        binding is to the TLS connection)"
                    .into(),
            );
        }
        if let Some(v) = nonempty("require_auth") {
            if !require_auth_satisfied(v, binding)? {
                return Err(format!(
                    "`require_auth`: dlb cannot enforce it (its PostgreSQL driver answers \
                     whichever authentication the server asks for){}; use \
                     channel_binding=require (only SCRAM-SHA-256 with channel binding, which \
                     satisfies require_auth=scram-sha-256) and sslmode=verify-full to \
                     authenticate the server",
                    if binding {
                        ", and with channel_binding=require the driver completes only \
                         SCRAM-SHA-256"
                    } else {
                        ""
                    }
                ));
            }
        }
        match nonempty("gssencmode") {
            // dlb never uses GSS encryption: `prefer` goes without, as libpq built without GSS.
            None | Some("disable" | "prefer") => {}
            Some("require") => {
                return Err(
                    "`gssencmode`: `require` is not supported: dlb does not use GSSAPI \
                            encryption (use sslmode=verify-full for an encrypted, \
                            authenticated connection)"
                        .into(),
                );
            }
            Some(_) => return Err("`gssencmode` must be disable, prefer or require".into()),
        }
        if nonempty("requirepeer").is_some() {
            return Err(
                "`requirepeer` is not supported: dlb does not check the operating \
                        system user of a server on a Unix socket (leave it out; over TCP, \
                        sslmode=verify-full authenticates the server)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Whether libpq's `require_auth` list `value` holds for every authentication dlb's driver
/// (tokio-postgres) can complete: it answers a server's request for no authentication
/// (`none`), a cleartext password (`password`), an MD5 hash (`md5`) and SCRAM-SHA-256
/// (`scram-sha-256`), and refuses GSSAPI, SSPI and Kerberos. With `channel_binding=require`
/// (`binding`) it completes only SCRAM-SHA-256-PLUS: it refuses a server that asks for no
/// authentication, a password, an MD5 hash or SCRAM without channel binding. So
/// `require_auth=scram-sha-256` (or a list with it, or negations without it) holds with
/// `channel_binding=require`, and only `!gss`/`!sspi` hold without.
///
/// # Errors
/// libpq's grammar: methods separated by commas, all negated (`!`) or none, each once.
pub(crate) fn require_auth_satisfied(
    value: &str,
    binding: bool,
) -> std::result::Result<bool, String> {
    const METHODS: &[&str] = &["password", "md5", "gss", "sspi", "scram-sha-256", "none"];
    let mut listed: Vec<&str> = Vec::new();
    let mut negated = None;
    for item in value.split(',') {
        let (neg, method) = match item.strip_prefix('!') {
            Some(m) => (true, m),
            None => (false, item),
        };
        if !METHODS.contains(&method) {
            return Err(
                "`require_auth`: each method must be password, md5, gss, sspi, \
                        scram-sha-256 or none, optionally negated with '!'"
                    .into(),
            );
        }
        if *negated.get_or_insert(neg) != neg {
            return Err(
                "`require_auth`: negated methods cannot be mixed with non-negated ones".into(),
            );
        }
        if listed.contains(&method) {
            return Err("`require_auth`: a method is given more than once".into());
        }
        listed.push(method);
    }
    let possible: &[&str] = if binding {
        &["scram-sha-256"]
    } else {
        &["none", "password", "md5", "scram-sha-256"]
    };
    let allowed = |m: &&str| listed.contains(m) != negated.unwrap_or(false);
    Ok(possible.iter().all(allowed))
}
