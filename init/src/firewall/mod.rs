//! nf_tables firewall (being written).
