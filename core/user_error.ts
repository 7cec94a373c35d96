/**
 * Expected failures (bad config, missing inputs) and the one place that reports them.
 * @module
 */

/** An error caused by the user's input: printed as `error: …` without a stack trace. */
export class UserError extends Error {
  override name = "UserError";
}

/**
 * Run a stage's main function: a {@link UserError} prints `error: <message>` and exits 1;
 * anything else is a bug and is rethrown with its stack.
 *
 * @param main The stage body; receives the command-line arguments.
 */
export async function runMain(
  main: (args: string[]) => Promise<unknown>,
): Promise<void> {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`error: ${e.message}`);
      Deno.exit(1);
    }
    throw e;
  }
}
