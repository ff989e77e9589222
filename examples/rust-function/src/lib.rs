//! Sample function (being written).
