#!/usr/bin/env node
// Committed so the bin exists before the build (pnpm links bins at install time).
import '../dist/cli.js';
