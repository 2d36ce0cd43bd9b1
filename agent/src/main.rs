//! `edgefleet-agent`: the edge side of the tunnel (DESIGN.md §6). Not built yet; see the tunnel issue.

fn main() {
    eprintln!("edgefleet-agent: the tunnel is not implemented yet");
    std::process::exit(2);
}
