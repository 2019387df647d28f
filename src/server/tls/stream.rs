//! The stream adapter between rustls and the driver, and the `tls-server-end-point` channel
//! binding it reports.

use super::*;

/// The `MakeTlsConnect` of the driver: one TLS client configuration, the host name per
/// connection.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    pub(super) config: Arc<ClientConfig>,
}

impl MakeTlsConnect<postgres::Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<RustlsConnect, TlsError> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|_| TlsError(format!("\"{domain}\" is not a host name or IP address")))?;
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

pub(crate) struct RustlsConnect {
    pub(super) config: Arc<ClientConfig>,
    pub(super) name: ServerName<'static>,
}

pub(super) type ConnectFuture =
    Pin<Box<dyn Future<Output = std::result::Result<RustlsStream, TlsError>> + Send>>;

impl TlsConnect<postgres::Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = TlsError;
    type Future = ConnectFuture;

    fn connect(self, stream: postgres::Socket) -> ConnectFuture {
        Box::pin(async move {
            let host = self.name.to_str().into_owned();
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(|s| {
                    let binding = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|leaf| tls_server_end_point(leaf));
                    RustlsStream {
                        inner: Box::new(s),
                        binding,
                    }
                })
                .map_err(|e| {
                    TlsError(
                        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                            Some(r) => describe_rustls(r, &host),
                            None => e.to_string(),
                        },
                    )
                })
        })
    }
}

/// A TLS connection to the server, with its `tls-server-end-point` channel binding data.
pub(crate) struct RustlsStream {
    pub(super) inner: Box<tokio_rustls::client::TlsStream<postgres::Socket>>,
    /// [`tls_server_end_point`] of the server's certificate, taken after the handshake.
    pub(super) binding: Option<Vec<u8>>,
}

impl postgres::tls::TlsStream for RustlsStream {
    /// `tls-server-end-point` (RFC 5929), the binding PostgreSQL's SCRAM-SHA-256-PLUS uses:
    /// with it the driver authenticates with channel binding when the server offers
    /// SCRAM-SHA-256-PLUS (`channel_binding=prefer`, the default, and `require`), so that a
    /// relay between dlb and the server cannot complete SCRAM even where the certificate is
    /// not verified (`sslmode=require` without `sslrootcert`). None when the certificate's
    /// signature algorithm has no such hash (see [`tls_server_end_point`]): SCRAM then runs
    /// without binding, which `channel_binding=require` refuses.
    fn channel_binding(&self) -> ChannelBinding {
        match &self.binding {
            Some(hash) => ChannelBinding::tls_server_end_point(hash.clone()),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929's `tls-server-end-point` data of a server certificate (DER): its hash with the
/// hash function of its signature algorithm, SHA-256 for MD5 and SHA-1 signatures; SHA-384 and
/// SHA-512 for certificates signed with those. As PostgreSQL (OpenSSL's signature NIDs), none
/// for an algorithm without a separate hash (RSASSA-PSS, Ed25519, Ed448), for which the server
/// could not compute it either, and for SHA-224 (not in ring), or when the DER does not parse.
pub(crate) fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    let algorithm = match signature_algorithm(cert)? {
        // md5WithRSAEncryption, sha1WithRSAEncryption, ecdsa-with-SHA1, dsa-with-sha1:
        // SHA-256 (RFC 5929, 4.1).
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04 | 0x05]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]
        | [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03] => &digest::SHA256,
        // sha256WithRSAEncryption, ecdsa-with-SHA256, dsa-with-sha256.
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        | [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02] => &digest::SHA256,
        // sha384WithRSAEncryption, ecdsa-with-SHA384.
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => &digest::SHA384,
        // sha512WithRSAEncryption, ecdsa-with-SHA512.
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID (content octets) of a DER certificate's outer `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID,
/// parameters }, signatureValue BIT STRING }`.
pub(super) fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    /// One DER element at the start of `b`: its tag, its content, and what follows it.
    fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &d| (acc << 8) | usize::from(d));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = element(certificate)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = element(rest)? else {
        return None;
    };
    match element(algorithm)? {
        (OID, oid, _) => Some(oid),
        _ => None,
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
