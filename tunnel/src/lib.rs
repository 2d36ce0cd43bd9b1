//! The reverse HTTP/2 tunnel between edge agents and the hub (see DESIGN.md §6).
