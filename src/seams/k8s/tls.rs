//! The API client's TLS settings: the server is checked against what the kubeconfig names, and nothing else
//! is loaded.
//!
//! kube's `rustls_client_config` loads the system's CA roots (the platform verifier: every certificate under
//! `/etc/ssl/certs`, parsed, about 2 ms on the bench machine) whenever the kubeconfig names no CA, including
//! with `insecure-skip-tls-verify`, where it then throws them away; on a host without a CA bundle such a
//! kubeconfig even fails. [`client_config`] picks the server's trust itself:
//! - `certificate-authority` or `-data` (in-cluster: the service account's `ca.crt`): that CA alone;
//! - `insecure-skip-tls-verify`: no verification, no roots loaded;
//! - neither: the system's roots through the platform verifier, as kube (and client-go) use them.
//!
//! The client's identity (`client-certificate`/`client-key`, as data or files, or an exec plugin's
//! certificate) is still loaded by kube, so every key format kube takes is taken; `tls-server-name` is the
//! connector's (`super::transport`). In-cluster, kube re-reads `ca.crt` every minute for CA rotation; this
//! client lives for one call, so it uses the CA kube read at start.

use std::sync::Arc;

use kube::client::ConfigExt;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// The rustls client settings for `config` (see the module documentation).
pub fn client_config(config: &kube::Config) -> Result<ClientConfig, String> {
    build(config, system_roots)
}

/// A verifier over the system's CA roots: the one kube uses when the kubeconfig names no CA.
fn system_roots(
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    Ok(Arc::new(rustls_platform_verifier::Verifier::new(provider)?))
}

/// [`client_config`] with the system roots' loader given (tests count its calls).
fn build(
    config: &kube::Config,
    system: impl FnOnce(Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error>,
) -> Result<ClientConfig, String> {
    // kube loads the identity; an empty CA list keeps it from loading roots, and the verifier it makes of
    // that list is replaced below (kube itself swaps its verifier that way for in-cluster CA reloads).
    let mut identity = config.clone();
    identity.root_cert = Some(Vec::new());
    identity.root_cert_file = None;
    identity.accept_invalid_certs = false;
    let mut tls = identity.rustls_client_config().map_err(|e| e.to_string())?;
    let provider = tls.crypto_provider().clone();
    let verifier: Arc<dyn ServerCertVerifier> = if config.accept_invalid_certs {
        Arc::new(NoVerification)
    } else if let Some(ca) = &config.root_cert {
        WebPkiServerVerifier::builder_with_provider(Arc::new(ca_roots(ca)?), provider)
            .build()
            .map_err(|e| format!("certificate-authority: {e}"))?
    } else {
        system(provider).map_err(|e| {
            format!(
                "the kubeconfig names no certificate-authority and the system's CA roots cannot be \
                 loaded: {e}"
            )
        })?
    };
    tls.dangerous().set_certificate_verifier(verifier);
    Ok(tls)
}

/// The kubeconfig's CA certificates (DER) as the only roots.
fn ca_roots(ca: &[Vec<u8>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for der in ca {
        roots
            .add(CertificateDer::from(der.as_slice()))
            .map_err(|e| format!("certificate-authority: {e}"))?;
    }
    Ok(roots)
}

/// `insecure-skip-tls-verify`: any certificate and any signature, as kube accepts them.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        tracing::warn!("the API server's certificate is not verified (insecure-skip-tls-verify)");
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // kube's list: every scheme a server may sign with, since none is checked.
        vec![
            SignatureScheme::RSA_PKCS1_SHA1,
            SignatureScheme::ECDSA_SHA1_Legacy,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::ECDSA_NISTP521_SHA512,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::ED25519,
            SignatureScheme::ED448,
        ]
    }
}

/// Certificates for tests: CAs, serving and client certificates (rcgen), and a TLS server that reports
/// what each handshake did.
#[cfg(test)]
pub(crate) mod testpki {
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    use rustls::{
        RootCertStore, ServerConfig,
        crypto::ring::default_provider,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        server::WebPkiClientVerifier,
    };

    /// A CA that signs serving and client certificates.
    pub struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    /// A certificate and its key, PEM.
    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
        der: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let issuer =
                CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Ca { issuer }
        }

        /// The CA as kube's `root_cert` carries it (DER), as read from `certificate-authority(-data)`.
        pub fn der(&self) -> Vec<u8> {
            self.issuer.der().to_vec()
        }

        /// A serving certificate for `names`, or a client certificate for user `names[0]`.
        pub fn leaf(&self, names: &[&str], client: bool) -> Leaf {
            let sans = if client {
                Vec::new()
            } else {
                names.iter().map(|s| s.to_string()).collect()
            };
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                der: cert.der().clone(),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            }
        }
    }

    /// A server presenting `leaf` (signed by `ca`); with `clients`, it requires a client certificate
    /// signed by that CA. ALPN http/1.1.
    pub fn server_config(ca: &Ca, leaf: &Leaf, clients: Option<&Ca>) -> Arc<ServerConfig> {
        let provider = Arc::new(default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients {
            Some(client_ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(client_ca.issuer.der().clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(
                vec![leaf.der.clone(), ca.issuer.der().clone()],
                leaf.key.clone_key(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        net::SocketAddr,
        process::Command,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use rustls::{
        ServerConfig,
        client::danger::ServerCertVerifier,
        crypto::{CryptoProvider, ring::default_provider},
        pki_types::ServerName,
    };
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::{
        testpki::{Ca, server_config},
        *,
    };

    /// A TLS server on loopback that writes "ok" after each handshake; the counter counts the handshakes in
    /// which the client presented a certificate.
    async fn serve(config: Arc<ServerConfig>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let with_cert = Arc::new(AtomicUsize::new(0));
        let seen = with_cert.clone();
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        if tls.get_ref().1.peer_certificates().is_some() {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = tls.write_all(b"ok").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (addr, with_cert)
    }

    /// A handshake with `tls` to `addr` as server `name`; Ok once the server's first bytes arrive.
    async fn handshake(tls: ClientConfig, addr: SocketAddr, name: &str) -> Result<(), String> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut stream = TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// A loader for the system roots that counts its calls and trusts `ca` in their place.
    fn counted<'a>(
        calls: &'a Cell<usize>,
        ca: &'a Ca,
    ) -> impl FnOnce(Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> + 'a
    {
        move |provider| {
            calls.set(calls.get() + 1);
            let roots = ca_roots(&[ca.der()]).unwrap();
            Ok(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        }
    }

    fn config() -> kube::Config {
        kube::Config::new("https://127.0.0.1:6443".parse().unwrap())
    }

    #[tokio::test]
    async fn the_kubeconfigs_ca_alone_is_trusted_and_no_system_root_is_loaded() {
        let (ca, other, system) = (Ca::new("cluster"), Ca::new("other"), Ca::new("system"));
        let (good, _) = serve(server_config(&ca, &ca.leaf(&["127.0.0.1"], false), None)).await;
        let (foreign, _) = serve(server_config(
            &other,
            &other.leaf(&["127.0.0.1"], false),
            None,
        ))
        .await;
        let (public, _) = serve(server_config(
            &system,
            &system.leaf(&["127.0.0.1"], false),
            None,
        ))
        .await;
        let mut kc = config();
        kc.root_cert = Some(vec![ca.der()]);
        assert_eq!(ca_roots(kc.root_cert.as_ref().unwrap()).unwrap().len(), 1);

        let calls = Cell::new(0);
        let tls = build(&kc, counted(&calls, &system)).unwrap();
        assert_eq!(
            calls.get(),
            0,
            "a kubeconfig with its own CA loads no system roots"
        );
        handshake(tls.clone(), good, "127.0.0.1").await.unwrap();
        let err = handshake(tls.clone(), foreign, "127.0.0.1")
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        let err = handshake(tls, public, "127.0.0.1").await.unwrap_err();
        assert!(
            err.contains("UnknownIssuer"),
            "not the system's roots: {err}"
        );
    }

    #[tokio::test]
    async fn the_server_name_is_checked_against_the_ca_signed_certificate() {
        let ca = Ca::new("cluster");
        let (addr, _) = serve(server_config(
            &ca,
            &ca.leaf(&["api.cluster.test"], false),
            None,
        ))
        .await;
        let mut kc = config();
        kc.root_cert = Some(vec![ca.der()]);
        let tls = build(&kc, |_| panic!("no system roots")).unwrap();
        handshake(tls.clone(), addr, "api.cluster.test")
            .await
            .unwrap();
        let err = handshake(tls, addr, "127.0.0.1").await.unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
    }

    #[tokio::test]
    async fn insecure_skip_tls_verify_trusts_any_server_and_loads_no_roots() {
        let (ca, system) = (Ca::new("self-signed"), Ca::new("system"));
        let (addr, _) = serve(server_config(
            &ca,
            &ca.leaf(&["elsewhere.test"], false),
            None,
        ))
        .await;
        let mut kc = config();
        kc.accept_invalid_certs = true;
        let calls = Cell::new(0);
        let tls = build(&kc, counted(&calls, &system)).unwrap();
        assert_eq!(calls.get(), 0, "insecure-skip-tls-verify loads no roots");
        handshake(tls, addr, "127.0.0.1").await.unwrap();

        // With a CA as well, the CA is not enforced either (as kube does it).
        let other = Ca::new("other");
        kc.root_cert = Some(vec![other.der()]);
        let tls = build(&kc, |_| panic!("no system roots")).unwrap();
        handshake(tls, addr, "127.0.0.1").await.unwrap();
    }

    #[tokio::test]
    async fn without_a_ca_the_system_roots_are_used() {
        let system = Ca::new("system");
        let (addr, _) = serve(server_config(
            &system,
            &system.leaf(&["127.0.0.1"], false),
            None,
        ))
        .await;
        let calls = Cell::new(0);
        let tls = build(&config(), counted(&calls, &system)).unwrap();
        assert_eq!(calls.get(), 1);
        handshake(tls, addr, "127.0.0.1").await.unwrap();

        let err = build(&config(), |_| {
            Err(rustls::Error::General("none here".into()))
        })
        .unwrap_err();
        assert!(
            err.contains("names no certificate-authority") && err.contains("none here"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_client_certificate_is_presented_from_data_or_files() {
        let ca = Ca::new("cluster");
        let (addr, with_cert) = serve(server_config(
            &ca,
            &ca.leaf(&["127.0.0.1"], false),
            Some(&ca),
        ))
        .await;
        let client = ca.leaf(&["system:node:n1"], true);
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);

        let mut kc = config();
        kc.root_cert = Some(vec![ca.der()]);
        let err = handshake(build(&kc, |_| panic!()).unwrap(), addr, "127.0.0.1")
            .await
            .unwrap_err();
        assert!(!err.is_empty(), "the server requires a client certificate");
        assert_eq!(with_cert.load(Ordering::SeqCst), 0);

        kc.auth_info.client_certificate_data = Some(b64(&client.cert_pem));
        kc.auth_info.client_key_data = Some(b64(&client.key_pem).into());
        handshake(build(&kc, |_| panic!()).unwrap(), addr, "127.0.0.1")
            .await
            .unwrap();
        assert_eq!(with_cert.load(Ordering::SeqCst), 1);

        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &client.cert_pem).unwrap();
        std::fs::write(&key, &client.key_pem).unwrap();
        kc.auth_info.client_certificate_data = None;
        kc.auth_info.client_key_data = None;
        kc.auth_info.client_certificate = Some(cert.display().to_string());
        kc.auth_info.client_key = Some(key.display().to_string());
        handshake(build(&kc, |_| panic!()).unwrap(), addr, "127.0.0.1")
            .await
            .unwrap();
        assert_eq!(with_cert.load(Ordering::SeqCst), 2);

        // A certificate without its key is refused, as kube refuses it.
        kc.auth_info.client_key = None;
        assert!(build(&kc, |_| panic!()).is_err());
    }

    #[test]
    fn a_malformed_ca_is_refused() {
        let mut kc = config();
        kc.root_cert = Some(vec![b"not a certificate".to_vec()]);
        let err = build(&kc, |_| panic!()).unwrap_err();
        assert!(err.contains("certificate-authority"), "{err}");
    }

    /// Set in the child process of [`a_host_without_ca_roots_still_connects`].
    const CHILD: &str = "PLEXUS_TEST_NO_SYSTEM_ROOTS";

    /// On a host without a CA bundle (rustls-native-certs reads only `SSL_CERT_FILE`/`SSL_CERT_DIR` when
    /// they are set: here an empty directory), the API client is built for a kubeconfig that names its
    /// CA or skips verification. kube's own settings needed the system's roots for the latter. The
    /// environment is the whole process's, so the check runs in a child: this test binary, running
    /// [`child_without_system_roots`] alone.
    #[test]
    fn a_host_without_ca_roots_still_connects() {
        let empty = tempfile::tempdir().unwrap();
        // The test's name as libtest knows it: this module's path without the crate's name.
        let (_, here) = module_path!().split_once("::").unwrap();
        let child = format!("{here}::child_without_system_roots");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                child.as_str(),
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("SSL_CERT_FILE", empty.path().join("none.pem"))
            .env("SSL_CERT_DIR", empty.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    #[ignore = "run by a_host_without_ca_roots_still_connects in a child without system roots"]
    async fn child_without_system_roots() {
        if std::env::var_os(CHILD).is_none() {
            eprintln!(
                "skipped: run by a_host_without_ca_roots_still_connects, with no system roots"
            );
            return;
        }
        // The premise: no system roots in this process.
        assert!(system_roots(Arc::new(default_provider())).is_err());
        let ca = Ca::new("cluster");
        let (addr, _) = serve(server_config(&ca, &ca.leaf(&["127.0.0.1"], false), None)).await;
        let url = format!("https://{addr}");

        let mut kc = kube::Config::new(url.parse().unwrap());
        kc.accept_invalid_certs = true;
        super::super::transport::client(&kc).expect("insecure-skip-tls-verify");
        handshake(client_config(&kc).unwrap(), addr, "127.0.0.1")
            .await
            .unwrap();

        let mut kc = kube::Config::new(url.parse().unwrap());
        kc.root_cert = Some(vec![ca.der()]);
        super::super::transport::client(&kc).expect("the kubeconfig's CA");
        handshake(client_config(&kc).unwrap(), addr, "127.0.0.1")
            .await
            .unwrap();

        let kc = kube::Config::new(url.parse().unwrap());
        let err = super::super::transport::client(&kc).err().unwrap();
        assert!(err.contains("names no certificate-authority"), "{err}");
    }
}
