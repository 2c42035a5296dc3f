//! TLS for `amqps://` brokers: our own rustls client configuration (a CA file, the system's
//! CAs, or, for tests, no verification), with the ring backend (aws-lc needs a cmake/C build).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::core::broker_options::{TlsOptions, CA_FILE_OPTION};

/// Checks that a CA file holds usable certificates (the error names the option and the path).
pub fn check_ca_file(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    load_ca_roots(path)
        .map(|_| ())
        .map_err(|e| format!("invalid {CA_FILE_OPTION} '{path}': {e}"))
}

/// The CA certificates of a PEM file, as a root store.
fn load_ca_roots(path: &str) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The rustls client configuration for `amqps://` brokers.
pub fn tls_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if options.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else if options.ca_file.is_empty() {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            return Err(format!(
                "TLS setup: no CA certificate in the system's store; set {}",
                CA_FILE_OPTION
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let roots = load_ca_roots(&options.ca_file)
            .map_err(|e| format!("TLS setup: {} '{}': {e}", CA_FILE_OPTION, options.ca_file))?;
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `key_evt_amqp.tls_skip_verify`: accepts any certificate, but still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_configurations() {
        let options = TlsOptions {
            ca_file: String::new(),
            skip_verify: true,
        };
        assert!(tls_config(&options).is_ok());
        let options = TlsOptions {
            ca_file: "/nonexistent/ca.pem".into(),
            skip_verify: false,
        };
        let e = tls_config(&options).unwrap_err();
        assert!(
            e.contains("key_evt_amqp.tls_ca_file '/nonexistent/ca.pem'"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert_eq!(check_ca_file(""), Ok(()));
        let e = check_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.starts_with("invalid key_evt_amqp.tls_ca_file '/nonexistent/ca.pem': cannot read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("kea-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = check_ca_file(empty.to_str().unwrap()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
