package ember

// RunTask is runTask for the external tests that run in-process executors
// against a standalone driver.
var RunTask = runTask
