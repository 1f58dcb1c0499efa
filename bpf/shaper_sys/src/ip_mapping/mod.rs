//! Types of the `ip_to_shaper` LPM trie and its `shaper_hotcache`.

mod ip_hash_data;
mod ip_hash_key;

pub use ip_hash_data::IpHashData;
pub use ip_hash_key::IpHashKey;
