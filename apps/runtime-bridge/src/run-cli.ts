/**
 * Runs a command's `main` and turns its result into the process exit code. An error that
 * escapes `main` (a bug, not an expected failure) still ends with one line on stderr and
 * exit code 1, never a stack trace and an unhandled rejection.
 */
export function runCli(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`${name}: ${(error as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
