//! TLS setup shared by every rustls user in the process.

/// Installs ring as the process-wide rustls crypto provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
