//! The `wk` integration tests, in one binary: every module starts real `wk` processes
//! (servers, agents, the CLI) and talks to them over loopback. One binary links once,
//! which keeps a cold build's time and disk down.

mod common;

mod agent;
mod api;
mod cli;
mod containers;
mod controllers;
mod ha;
mod multihost;
mod networking;
mod partition;
mod up;
