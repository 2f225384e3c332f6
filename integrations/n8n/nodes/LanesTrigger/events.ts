import type { IDataObject } from 'n8n-workflow';

/**
 * The event type of a delivery. Global events name it (`type`: `agent.awake`, `job.failed`,
 * `watchdog.alert`…); per-job callbacks carry the job's `status` instead: `completed` is
 * `job.completed`, `failed` is `job.failed`.
 */
export function eventType(body: IDataObject): string {
	if (typeof body.type === 'string' && body.type !== '') return body.type;
	if (body.status === 'completed') return 'job.completed';
	if (body.status === 'failed') return 'job.failed';
	return 'unknown';
}

/** Whether `type` is selected: `*` is every event, `agent.*` every type starting `agent.`. */
export function eventSelected(type: string, selected: string[]): boolean {
	return selected.some((s) => (s.endsWith('*') ? type.startsWith(s.slice(0, -1)) : s === type));
}

/**
 * A ready-to-send line for events without one: global events carry `message` (in the
 * coordinator's language), per-job callbacks do not.
 */
export function summary(body: IDataObject, type: string): string {
	const where = [body.queue, body.lane].filter((v) => v !== undefined && v !== null && v !== '');
	const at = where.length > 0 ? ` (${where.join(' / ')})` : '';
	const job = String(body.job_id ?? body.task_id ?? '');
	if (type === 'job.completed') return `✅ Job ${job} completed${at}`;
	if (type === 'job.failed') return `❌ Job ${job} failed${at}: ${String(body.error ?? '')}`;
	return `Lanes event ${type}${at}`;
}

/** The trigger's output item: the event as Lanes sent it, plus its type, id and a message. */
export function eventItem(body: IDataObject, webhookId: string): IDataObject {
	const type = eventType(body);
	const item: IDataObject = { ...body, event_type: type, webhook_id: webhookId };
	if (typeof body.message !== 'string' || body.message === '') item.message = summary(body, type);
	return item;
}
