//! Keys, JWT signing and verification, opaque secrets.

pub mod jwt;
pub mod keys;
pub mod opaque;
pub mod password;
pub mod provider;
pub mod ring;
pub mod seal;
