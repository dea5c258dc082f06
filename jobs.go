package ember

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/emberhq/ember/internal/driver"
)

// JobStatus is a snapshot of a running job (one Map or MapEach call), as
// Driver.Jobs returns it: what Spark's SparkStatusTracker tells of its
// jobs, and the counts the console progress bar draws.
type JobStatus struct {
	// ID is the job's ID, as TaskContext.JobID, plugin.TaskInfo.JobID
	// and the driver's logs give it.
	ID      string
	Task    string    // the task's name
	Started time.Time // when the job began, once Map or MapEach had encoded its inputs
	Total   int       // the job's inputs
	// Done counts the inputs whose outcome is final: their task has
	// succeeded (or, in MapEach, failed for good).
	Done int
	// Running counts the attempts running on executors, as the driver
	// reckons them: one sent ahead of an executor's free slots
	// (ConfTaskPrefetch) counts once an attempt ahead of it there has
	// ended.
	Running int
}

// Jobs returns a snapshot of the jobs running now (the Map and MapEach
// calls that have encoded their inputs and not returned), oldest first;
// nil when there is none.
// It is for a status page, or a log line of a job's progress where the
// console bar is not drawn (output not to a terminal, a scheduled job).
// It is safe for concurrent use.
func (d *Driver) Jobs() []JobStatus {
	return d.jobs.snapshot()
}

// trackJob lists a job that has begun, for Jobs and the console progress
// bar, and returns the function that takes it off both once it has ended.
func (d *Driver) trackJob(task string, p *driver.Progress) (done func()) {
	j := &runningJob{task: task, p: p, since: time.Now()}
	d.jobs.add(j)
	hide := d.showProgress(j)
	return func() {
		hide()
		d.jobs.remove(j)
	}
}

// runningJob is a job that has begun and not ended.
type runningJob struct {
	task  string
	p     *driver.Progress
	since time.Time
}

// jobList is the driver's running jobs, in start order. It is safe for
// concurrent use.
type jobList struct {
	mu   sync.Mutex
	jobs []*runningJob
}

func (l *jobList) add(j *runningJob) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jobs = append(l.jobs, j)
}

func (l *jobList) remove(j *runningJob) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jobs = slices.DeleteFunc(l.jobs, func(x *runningJob) bool { return x == j })
}

// snapshot returns the status of the jobs that have an ID (RunJob gives
// it as the job begins, before its first task is placed).
func (l *jobList) snapshot() []JobStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []JobStatus
	for _, j := range l.jobs {
		id := j.p.Job()
		if id == 0 {
			continue
		}
		done, running, total := j.p.Counts()
		out = append(out, JobStatus{ID: strconv.Itoa(id), Task: j.task, Started: j.since, Total: total, Done: done, Running: running})
	}
	return out
}
