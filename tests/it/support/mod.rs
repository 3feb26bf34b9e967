//! Real parts for integration tests: hyper backends on ephemeral ports, the
//! gateway started in-process on bound listeners, the real binary, and
//! clients that can send what a browser never would.

#![allow(dead_code)]

pub mod backend;
pub mod binary;
pub mod certs;
pub mod client;
pub mod configmap;
pub mod gateway;
pub mod servlet;
