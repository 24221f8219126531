//! Pure core (being written).
