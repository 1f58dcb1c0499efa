//! Direction-tagged values.

mod down_up;

pub use down_up::DownUpOrder;
