//! A pair of values, download first.

use std::ops::AddAssign;

/// One value per traffic direction. `#[repr(C)]` and field order make it
/// match a C struct `{ T down; T up; }`, so it can sit inside BPF mirrors:
/// `DownUpOrder<u64>` is `struct down_up_u64`, `DownUpOrder<u32>` is
/// `struct down_up_u32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownUpOrder<T> {
    /// Towards the customer.
    pub down: T,
    /// Away from the customer.
    pub up: T,
}

impl<T> DownUpOrder<T> {
    /// Pairs two values, download first.
    pub const fn new(down: T, up: T) -> Self {
        Self { down, up }
    }

    /// Applies `f` to both sides.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> DownUpOrder<U> {
        DownUpOrder {
            down: f(self.down),
            up: f(self.up),
        }
    }
}

impl<T: Copy + AddAssign> DownUpOrder<T> {
    /// Adds `other` side by side.
    pub fn add(&mut self, other: &Self) {
        self.down += other.down;
        self.up += other.up;
    }
}

impl<T: Copy + PartialOrd> DownUpOrder<T> {
    /// True when either side exceeds its limit.
    pub fn any_over(&self, limit: &Self) -> bool {
        self.down > limit.down || self.up > limit.up
    }
}

#[cfg(test)]
mod tests {
    use super::DownUpOrder;

    #[test]
    fn layout_is_two_fields() {
        assert_eq!(std::mem::size_of::<DownUpOrder<u64>>(), 16);
        assert_eq!(std::mem::size_of::<DownUpOrder<u32>>(), 8);
        assert_eq!(std::mem::size_of::<DownUpOrder<u16>>(), 4);
    }

    #[test]
    fn add_and_map() {
        let mut a = DownUpOrder::new(1u64, 2);
        a.add(&DownUpOrder::new(10, 20));
        assert_eq!(a, DownUpOrder::new(11, 22));
        assert_eq!(a.map(|v| v * 8), DownUpOrder::new(88, 176));
        assert!(a.any_over(&DownUpOrder::new(11, 21)));
    }
}
