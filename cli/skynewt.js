#!/usr/bin/env node
// Entry point of the `skynewt` command: registers the tsx loader, then runs the TypeScript CLI.
require('tsx/cjs');
require('./main.ts');
