//! Plain value types shared by the `shaper_sys` BPF mirrors.

pub mod units;
mod xdp_ip_address;

pub use xdp_ip_address::XdpIpAddress;
