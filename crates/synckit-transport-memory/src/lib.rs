//! In-process hub and transport with fault injection.
